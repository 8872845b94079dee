"""settings.toml: defaults, every rule, and the exact wording of each error line."""

from __future__ import annotations

import string
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from supervisor.errors import SettingsError
from supervisor.schema import SettingsModel, validate
import dataclasses

from supervisor.loading import load
from supervisor.settings import DEFAULT_RUNTIME_DIR, DEFAULT_STATE_DIR, SECTION_TYPES, Settings

ROOT, USER = 0, 1000
REPO = Path(__file__).resolve().parent.parent


def errors(text: str, tmp_path: Path, euid: int = USER) -> list[str]:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as raised:
        load(path, euid=euid)
    return raised.value.lines


def loads(text: str, tmp_path: Path, euid: int = USER) -> Settings:
    path = tmp_path / "settings.toml"
    path.write_text(text)
    return load(path, euid=euid)


def test_an_empty_file_gives_the_contract_defaults(tmp_path, monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    settings = loads("", tmp_path)
    assert (settings.server.ip, settings.server.port, settings.server.default_url) == ("0.0.0.0", 8888, "/lab")
    assert settings.server.user == "jupyter-remote" and settings.server.extra_args == ()
    assert settings.tls.mode == "self-signed"
    assert (settings.tls.validity_days, settings.tls.renew_before_days) == (365, 30)
    assert settings.auth.rate_limit_per_minute == 10
    assert (settings.supervise.start_timeout, settings.supervise.health_interval) == (120, 10)
    assert settings.password_path == tmp_path / "password"
    assert settings.initial_password_path == tmp_path / "initial-password"
    assert (settings.state_dir, settings.runtime_dir) == (DEFAULT_STATE_DIR, DEFAULT_RUNTIME_DIR)


def test_the_settings_reference_is_valid_and_says_every_default(monkeypatch):
    reference = REPO / "etc" / "jupyter-remote" / "settings.toml.reference"
    loaded = load(reference, euid=USER)
    assert loaded == Settings.from_sections(SettingsModel().model_dump(), reference)
    # Every key of the model is present (and so documented) in the reference.
    document = tomllib.loads(reference.read_text())
    for section, model in SettingsModel.model_fields.items():
        assert set(document[section]) == set(model.annotation.model_fields), section


def test_the_shipped_conffile_sets_nothing_and_points_at_the_reference():
    """dpkg asks before replacing a conffile the user edited: one that sets nothing needs no
    change when a release adds keys, so upgrades never stop at that question."""
    shipped = REPO / "etc" / "jupyter-remote" / "settings.toml"
    assert tomllib.loads(shipped.read_text()) == {}
    assert load(shipped, euid=USER) == Settings(source=shipped)
    assert "/usr/share/doc/jupyter-remote/settings.toml.reference" in shipped.read_text()


def test_the_typed_settings_match_the_schema_field_for_field():
    """The daemon reads the frozen dataclasses; the schema fills them: neither may drift."""
    assert set(SECTION_TYPES) == set(SettingsModel.model_fields)
    for section, model_field in SettingsModel.model_fields.items():
        model = model_field.annotation
        fields = {f.name: f for f in dataclasses.fields(SECTION_TYPES[section])}
        assert list(fields) == list(model.model_fields), section
        for name, field in model.model_fields.items():
            default = field.default
            assert fields[name].default == (tuple(default) if isinstance(default, list) else default), \
                f"[{section}] {name}"


def test_settings_cross_a_process_boundary_unchanged(tmp_path):
    settings = loads('[server]\nextra_args = ["--ServerApp.x=1"]\n[tls]\nhostnames = ["a.example"]\n',
                     tmp_path)
    import json

    assert Settings.from_sections(json.loads(json.dumps(settings.sections())), settings.source) \
        == settings


def test_systemd_directories_are_the_defaults_when_set(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/jr-a:/var/lib/jr-b")
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/jr-a")
    settings = loads("", tmp_path)
    assert settings.state_dir == Path("/var/lib/jr-a") and settings.runtime_dir == Path("/run/jr-a")
    settings = loads('[paths]\nstate_dir = "/srv/state"\n', tmp_path)
    assert settings.state_dir == Path("/srv/state")


def test_relative_password_file_is_beside_the_settings(tmp_path):
    settings = loads('[auth]\npassword_file = "secret/hash"\n', tmp_path)
    assert settings.password_path == tmp_path / "secret" / "hash"
    absolute = loads('[auth]\npassword_file = "/etc/elsewhere"\n', tmp_path)
    assert absolute.password_path == Path("/etc/elsewhere")


@pytest.mark.parametrize("text, line", [
    ("[server]\nport = 70000", "[server] port: must be 1-65535, got 70000"),
    ("[server]\nport = 0", "[server] port: must be 1-65535, got 0"),
    ('[server]\nport = "8888"', '[server] port: must be a whole number, got "8888"'),
    ("[server]\nport = 88.5", "[server] port: must be a whole number, got 88.5"),
    ('[server]\nip = "localhost"',
     '[server] ip: must be an IP address such as "0.0.0.0", "::" or "127.0.0.1", got "localhost"'),
    ('[server]\ndefault_url = "lab"', '[server] default_url: must start with "/", got "lab"'),
    ('[server]\nbase_url = "/jupyter"', '[server] base_url: must start and end with "/", got "/jupyter"'),
    ('[server]\nroot_dir = "notebooks"', '[server] root_dir: must be an absolute path or "", got "notebooks"'),
    ('[server]\nuser = "root"',
     '[server] user: must not be root (Jupyter and its kernels never run as root), got "root"'),
    ('[server]\nextra_args = ["--debug", 3]', "[server] extra_args[1]: must be a string, got 3"),
    ('[server]\nextra_args = "--debug"', '[server] extra_args: must be a list, got "--debug"'),
    ('[auth]\npassword_hash = "hunter2"',
     '[auth] password_hash: must be a hash as printed by "jupyter-remote password --print" '
     '(argon2:$argon2id$...), got "hunter2"'),
    ("[auth]\nrate_limit_per_minute = -1", "[auth] rate_limit_per_minute: must be 0-100000, got -1"),
    ('[tls]\nmode = "selfsigned"',
     '[tls] mode: must be one of "self-signed", "files", "off", got "selfsigned"'),
    ("[tls]\nvalidity_days = 900", "[tls] validity_days: must be 1-825, got 900"),
    ('[tls]\nhostnames = ["ok.example", "bad_name"]',
     '[tls] hostnames[1]: must be a DNS name or an IP address, got "bad_name"'),
    ("[tls]\ncloud_metadata = 1", "[tls] cloud_metadata: must be true or false, got 1"),
    ('[kernel]\npackages = ["--index-url=http://evil"]',
     '[kernel] packages[0]: must be a package name such as "pandas" or "numpy>=2", '
     'got "--index-url=http://evil"'),
    ('[supervise]\nstop_timeout = "10"', '[supervise] stop_timeout: must be a number, got "10"'),
    ("[supervise]\nhealth_interval = 0", "[supervise] health_interval: must be 1-3600, got 0"),
    ('[paths]\nstate_dir = "state"', '[paths] state_dir: must be an absolute path or "", got "state"'),
    ("server = 5", "[server]: must be a table, got 5"),
])
def test_each_bad_value_is_one_line_naming_file_section_key_and_value(tmp_path, text, line):
    assert errors(text, tmp_path) == [f"{tmp_path / 'settings.toml'}: {line}"]


def test_unknown_keys_and_sections_suggest_the_close_name(tmp_path):
    lines = errors('[server]\nprot = 1\n[sever]\n[tls]\nmod = "off"\n[server.extra]\n', tmp_path)
    assert lines == [
        f"{tmp_path}/settings.toml: [server] prot: unknown key (did you mean port?)",
        f"{tmp_path}/settings.toml: [server] extra: unknown key (did you mean extra_args?)",
        f"{tmp_path}/settings.toml: [tls] mod: unknown key (did you mean mode?)",
        f"{tmp_path}/settings.toml: [sever]: unknown section (did you mean [server]?)",
    ]
    assert errors("[zzz]\n", tmp_path) == [f"{tmp_path}/settings.toml: [zzz]: unknown section"]
    assert errors("port = 1\n", tmp_path) == [
        f"{tmp_path}/settings.toml: port: a key outside any section (did you mean [server] port?)"]


def test_all_errors_of_a_file_are_reported_at_once(tmp_path):
    lines = errors('[server]\nport = 70000\nip = "x"\n[tls]\nvalidity_days = 0\n', tmp_path)
    assert len(lines) == 3


def test_malformed_toml_gives_line_and_column(tmp_path):
    assert errors('[server]\nport = = 3\n', tmp_path) == [
        f"{tmp_path}/settings.toml: line 2, column 8: invalid TOML: invalid value"]


def test_a_missing_file_is_an_error_not_silent_defaults(tmp_path):
    with pytest.raises(SettingsError) as raised:
        load(tmp_path / "nope.toml", euid=USER)
    assert raised.value.lines == [f"{tmp_path}/nope.toml: cannot read: No such file or directory"]


def test_tls_off_only_on_a_loopback_address(tmp_path):
    assert errors('[tls]\nmode = "off"\n', tmp_path) == [
        f'{tmp_path}/settings.toml: [tls] mode: "off" is accepted only with a loopback [server] ip '
        '("127.0.0.1" or "::1"), got ip "0.0.0.0"']
    for ip in ("127.0.0.1", "::1", "127.0.0.2"):
        assert loads(f'[server]\nip = "{ip}"\n[tls]\nmode = "off"\n', tmp_path).tls.mode == "off"


def test_renewal_must_come_before_expiry(tmp_path):
    assert errors("[tls]\nvalidity_days = 30\n", tmp_path) == [
        f"{tmp_path}/settings.toml: [tls] renew_before_days: must be less than validity_days (30), got 30"]
    assert loads("[tls]\nvalidity_days = 825\nrenew_before_days = 824\n", tmp_path).tls.validity_days == 825


def test_files_mode_needs_both_files(tmp_path):
    assert errors('[tls]\nmode = "files"\ncert_file = "/x.pem"\n', tmp_path) == [
        f'{tmp_path}/settings.toml: [tls] key_file: required when mode = "files"']


def test_the_account_must_exist_only_when_run_as_root(tmp_path):
    text = '[server]\nuser = "no-such-account-here"\n'
    assert loads(text, tmp_path, euid=USER).server.user == "no-such-account-here"
    assert errors(text, tmp_path, euid=ROOT) == [
        f'{tmp_path}/settings.toml: [server] user: no such account, got "no-such-account-here" '
        "(create it: useradd --system --create-home no-such-account-here)"]


def test_an_inline_hash_is_accepted(tmp_path):
    hashed = "argon2:$argon2id$v=19$m=10240,t=10,p=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
    assert loads(f"[auth]\npassword_hash = '{hashed}'\n", tmp_path).auth.password_hash == hashed


# --- property-based: whatever the document, the loader accepts or raises our own error ---------

KEYS = {
    section: list(model.annotation.model_fields) + ["bogus"]
    for section, model in SettingsModel.model_fields.items()
}
scalars = st.one_of(
    st.integers(-10**6, 10**6), st.floats(allow_nan=False, allow_infinity=False), st.booleans(),
    st.text(string.printable, max_size=20), st.sampled_from(["0.0.0.0", "::", "127.0.0.1", "/lab", "/",
                                                             "self-signed", "files", "off", "/tmp/x"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=5), scalars, max_size=2))
documents = st.dictionaries(
    st.sampled_from([*KEYS, "extra"]),
    st.one_of(st.dictionaries(st.sampled_from(sorted({k for ks in KEYS.values() for k in ks})), values,
                              max_size=6), scalars),
    max_size=6,
)


@hypothesis_settings(max_examples=400, deadline=None)
@given(documents)
def test_any_document_is_accepted_or_raises_settings_error(document):
    try:
        settings = validate(document, Path("/etc/jupyter-remote/settings.toml"), euid=USER)
    except SettingsError as error:
        assert error.lines and all(line.startswith("/etc/jupyter-remote/settings.toml: ") for line in error.lines)
        assert all("\n" not in line for line in error.lines)
    else:
        assert isinstance(settings, Settings)


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_accepted_or_raises_settings_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "settings.toml"
    path.write_text(text)
    try:
        load(path, euid=USER)
    except SettingsError as error:
        assert all(line.startswith(f"{path}: ") for line in error.lines)
