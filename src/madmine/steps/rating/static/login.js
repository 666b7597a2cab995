// The rating link is /login#<token>. The token is in the fragment, which the browser never
// sends to a server or proxy: take it out of the address bar and this history entry at once,
// exchange it for an HttpOnly session cookie, then open the rating page in place of this one.
"use strict";

(async () => {
  const status = document.getElementById("login-status");
  let token = location.hash.replace(/^#/, "");
  if (token.startsWith("token=")) token = token.slice("token=".length);
  token = decodeURIComponent(token);
  history.replaceState(null, "", "/login");
  if (!token) {
    status.textContent = "This link holds no token: open the whole link you were given.";
    document.body.dataset.state = "no-token";
    return;
  }
  try {
    const response = await fetch("/api/login", {
      method: "POST", credentials: "same-origin", headers: { Authorization: `Bearer ${token}` },
    });
    if (response.ok) {
      location.replace("/");
      return;
    }
    status.textContent = response.status === 403
      ? "This rating link is not valid (any more): ask for a new one."
      : `Cannot sign in (${response.status}); try the link again.`;
  } catch (err) {
    status.textContent = `Cannot sign in: ${err.message}`;
  }
  document.body.dataset.state = "refused";
})();
