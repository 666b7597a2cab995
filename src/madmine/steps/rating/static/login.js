// The rating link is /login#<code>: a one-time sign-in code, in the fragment, which the browser
// never sends to a server or proxy. Take it out of the address bar and this tab's history at
// once, exchange it for an HttpOnly session cookie (the exchange uses the code up, so the copy
// the browser's history keeps opens nothing), then open the rating page in place of this one.
"use strict";

(async () => {
  const status = document.getElementById("login-status");
  const code = decodeURIComponent(location.hash.replace(/^#/, ""));
  history.replaceState(null, "", "/login");
  if (!code) {
    status.textContent = "This link holds no sign-in code: open the whole link you were given.";
    document.body.dataset.state = "no-token";
    return;
  }
  try {
    const response = await fetch("/api/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ code }),
    });
    if (response.ok) {
      location.replace("/");
      return;
    }
    status.textContent = response.status === 403
      ? "This sign-in link was used already, or is not valid any more: ask for a new one."
      : `Cannot sign in (${response.status}); try the link again.`;
  } catch (err) {
    status.textContent = `Cannot sign in: ${err.message}`;
  }
  document.body.dataset.state = "refused";
})();
