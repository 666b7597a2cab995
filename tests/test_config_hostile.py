"""madmine.toml as untrusted input: a path that is not a regular file, a huge file or bytes that
are not UTF-8 are refused with one line, without reading what cannot be read; any document at
all gives a Config or a ConfigError (fuzzed with hypothesis, derandomized)."""

from __future__ import annotations

import datetime as dt
import os
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bounded
from madmine import config as config_module
from madmine.config import SECTIONS, Config, ConfigError, load_config, parse_config

MINIMAL = """
[workspace]
uri = "work/"

[classes]
names = ["background", "aeroplane", "bicycle"]

[[models]]
name = "target"
role = "target"
arch = "deeplabv3_resnet50"

[[models]]
name = "fcn"
role = "competitor"
maps = "preds/fcn/"
"""
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=200,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "preds" / "fcn").mkdir(parents=True)
    return tmp_path


def test_a_folder_is_refused_in_one_line(folder):
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_config(folder)


def test_a_file_over_a_megabyte_is_refused(folder):
    path = folder / "madmine.toml"
    path.write_text(MINIMAL + "# padding\n" * 200_000)  # valid TOML, 2 MB of comments
    with pytest.raises(ConfigError, match=r"is \d+ bytes; a madmine.toml is a few kilobytes"):
        load_config(path)


def test_bytes_that_are_not_utf8_are_refused(folder):
    path = folder / "madmine.toml"
    path.write_bytes(MINIMAL.encode() + b'\n# caf\xe9 \xff\n')
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(invalid (start|continuation) byte at byte \d+\)"):
        load_config(path)


def test_dev_zero_and_a_fifo_are_refused_without_being_read(folder):
    """In a bounded child that fails any attempt to open either path: the refusal comes from
    stat alone (reading /dev/zero grows until memory runs out; a FIFO blocks forever)."""
    fifo = folder / "madmine.toml"
    os.mkfifo(fifo)
    try:
        result = bounded.python(
            f"""
            import builtins, io, os, pathlib
            guarded = {{"/dev/zero", {str(fifo)!r}}}
            def refuse(original):
                def wrapper(path, *args, **kwargs):
                    if os.fspath(path) in guarded:
                        raise AssertionError(f"opened {{path}}")
                    return original(path, *args, **kwargs)
                return wrapper
            builtins.open = io.open = refuse(builtins.open)
            os.open = refuse(os.open)
            from madmine.config import ConfigError, load_config
            for path in guarded:
                try:
                    load_config(path)
                except ConfigError as exc:
                    print("ConfigError:", exc)
            """,
            timeout=30,
            memory=1 << 30,
        )
    finally:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    assert result.returncode == 0, result.stderr[-2000:]
    lines = sorted(result.stdout.splitlines())
    assert lines == sorted(
        f"ConfigError: config file {p!r} is not a regular file; pass --config PATH of a madmine.toml"
        for p in ("/dev/zero", str(fifo))
    )


def test_the_cli_prints_one_line_and_exits_2(folder):
    bad = folder / "bad.toml"
    bad.write_bytes(b"\xff\xfe[workspace]\n")
    for config, expected in [(str(folder), "is not a regular file"), (str(bad), "not UTF-8 text"),
                             ("/dev/zero", "is not a regular file")]:
        line = bounded.one_line_error(bounded.madmine("--config", config, "sql", "select 1", cwd=folder, timeout=60))
        assert expected in line


def test_a_file_that_fails_to_read_is_named(folder):
    """/proc/self/mem is a regular file of size 0 whose read fails (EIO): the error names it."""
    line = bounded.one_line_error(bounded.madmine("--config", "/proc/self/mem", "sql", "select 1", cwd=folder, timeout=60))
    assert "config file '/proc/self/mem' cannot be read" in line and "Input/output error" in line, line


# ---- fuzzing ---------------------------------------------------------------------------------
def assert_accepts_or_refuses(load) -> None:
    """The property every fuzz test asserts: a Config, or a ConfigError with a message; never a traceback."""
    try:
        result = load()
    except ConfigError as exc:
        assert str(exc) and "Traceback" not in str(exc)
        return
    assert isinstance(result, Config)


@FUZZ
@given(data=st.binary(max_size=512))
def test_arbitrary_bytes(folder, data):
    path = folder / "fuzz.toml"
    path.write_bytes(data)
    assert_accepts_or_refuses(lambda: load_config(path))


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, len(MINIMAL)), st.text(max_size=8)), min_size=1, max_size=4))
def test_edited_text(folder, edits):
    text = MINIMAL
    for at, insert in edits:
        text = text[:at] + insert + text[at + len(insert) :]
    path = folder / "fuzz.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    assert_accepts_or_refuses(lambda: load_config(path))


HOSTILE_TEXT = st.sampled_from(["", "/", "\x00", "a\x00b/", "s3://", "s3://b/k", "../../etc", "a:b", "x" * 5000, "work/",
                                "preds/fcn/", "/dev/zero", "~", "\udcff"])
TOML_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64), st.floats(), st.text(max_size=12), HOSTILE_TEXT, HOSTILE_TEXT,
    st.datetimes(timezones=st.none() | st.just(dt.UTC)),
)
TOML_VALUE = st.recursive(
    TOML_SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def section_keys(name: str) -> list[str]:
    import dataclasses

    return [f.name for f in dataclasses.fields(SECTIONS[name])]


@st.composite
def documents(draw):
    """A parsed TOML document shaped like a madmine.toml: real section and key names, any values."""
    doc = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS) + ["extra"]), unique=True, max_size=6)):
        keys = section_keys(section) if section in SECTIONS else ["x"]
        table = {k: draw(TOML_VALUE) for k in draw(st.lists(st.sampled_from(keys), unique=True, max_size=4))}
        doc[section] = [table, *draw(st.lists(st.just(dict(table)), max_size=1))] if section == "models" else table
        if draw(st.integers(0, 5)) == 0:
            doc[section] = draw(TOML_VALUE)
    return doc


@settings(FUZZ, max_examples=100)
@given(doc=documents())
def test_arbitrary_documents(folder, doc):
    assert_accepts_or_refuses(lambda: parse_config(doc, folder, folder / "madmine.toml"))


@pytest.mark.parametrize("section", sorted(SECTIONS))
@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_arbitrary_values_in_a_valid_file(folder, section, data):
    import tomllib

    doc = tomllib.loads(textwrap.dedent(MINIMAL))
    for _ in range(data.draw(st.integers(1, 3))):
        key = data.draw(st.sampled_from(section_keys(section)))
        value = data.draw(st.one_of(HOSTILE_TEXT, TOML_VALUE))
        if section == "models":
            doc["models"][data.draw(st.integers(0, 1))][key] = value
        else:
            doc.setdefault(section, {})[key] = value
    assert_accepts_or_refuses(lambda: parse_config(doc, folder, folder / "madmine.toml"))


def test_a_nul_in_the_workspace_uri_is_a_config_error(folder):
    import tomllib

    doc = tomllib.loads(MINIMAL)
    doc["workspace"]["uri"] = "work\x00/"
    with pytest.raises(ConfigError, match=r"\[workspace\] uri must not contain a NUL character"):
        parse_config(doc, folder, folder / "madmine.toml")


def test_module_limit_is_a_megabyte():
    assert config_module.MAX_CONFIG_BYTES == 1 << 20
