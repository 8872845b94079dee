"""settings.toml: defaults, every rule, and the exact wording of each error line."""

from __future__ import annotations

import os
import pwd
import string
import subprocess
import tomllib
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from support import cli, settings_text

from supervisor.advice import trusts_xheaders
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
     '(argon2:$argon2id$...)'),
    ("[auth]\nrate_limit_per_minute = -1", "[auth] rate_limit_per_minute: must be 0-100000, got -1"),
    ('[tls]\nmode = "selfsigned"',
     '[tls] mode: must be one of "self-signed", "acme", "files", "off", got "selfsigned"'),
    ("[tls]\nvalidity_days = 900", "[tls] validity_days: must be 1-825, got 900"),
    ('[tls]\nhostnames = ["ok.example", "bad_name"]',
     '[tls] hostnames[1]: must be a DNS name or an IP address, got "bad_name"'),
    ("[tls]\ncloud_metadata = 1", "[tls] cloud_metadata: must be true or false, got 1"),
    ('[kernel]\npackages = ["--index-url=http://evil"]',
     '[kernel] packages[0]: must be a package name such as "pandas" or "numpy>=2", '
     'got "--index-url=http://evil"'),
    ('[dask]\ncluster = "tls://10.0.1.5"',
     '[dask] cluster: must be "local" or a scheduler address such as "tls://10.0.1.5:8786", '
     'got "tls://10.0.1.5"'),
    ('[dask]\ncluster = "http://10.0.1.5:8787/status"',
     '[dask] cluster: must be "local" or a scheduler address such as "tls://10.0.1.5:8786", '
     'got "http://10.0.1.5:8787/status"'),
    ('[dask]\ncluster = "Local"',
     '[dask] cluster: must be "local" or a scheduler address such as "tls://10.0.1.5:8786", '
     'got "Local"'),
    ('[dask]\nenabled = "yes"', '[dask] enabled: must be true or false, got "yes"'),
    ('[supervise]\nstop_timeout = "10"', '[supervise] stop_timeout: must be a number, got "10"'),
    ("[supervise]\nhealth_interval = 0", "[supervise] health_interval: must be 1-3600, got 0"),
    ('[paths]\nstate_dir = "state"', '[paths] state_dir: must be an absolute path or "", got "state"'),
    ("server = 5", "[server]: must be a table"),
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
    # (Run by a user, root's other rule also speaks: the test's folder is not root's.)
    assert (f'{tmp_path}/settings.toml: [server] user: no such account, got "no-such-account-here" '
            "(create it: useradd --system --create-home no-such-account-here)"
            ) in errors(text, tmp_path, euid=ROOT)


def test_an_inline_hash_is_accepted(tmp_path):
    hashed = "argon2:$argon2id$v=19$m=10240,t=10,p=8$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"
    assert loads(f"[auth]\npassword_hash = '{hashed}'\n", tmp_path).auth.password_hash == hashed


# --- control characters: a value must never become a second line or a second notify field ------

CONTROL = "must not hold control characters (newline, carriage return, tab, NUL, DEL, ...)"


@pytest.mark.parametrize("text, line", [
    ('[server]\ndefault_url = "/lab\\nSTOPPING=1"',
     f'[server] default_url: {CONTROL}, got "/lab\\nSTOPPING=1"'),
    ('[server]\nroot_dir = "/srv/a\\rb"', f'[server] root_dir: {CONTROL}, got "/srv/a\\rb"'),
    ('[server]\nbase_url = "/a\\u0000/"', f'[server] base_url: {CONTROL}, got "/a\\u0000/"'),
    ('[server]\nuser = "jr\\tx"', f'[server] user: {CONTROL}, got "jr\\tx"'),
    ('[server]\nextra_args = ["--debug", "--x=\\u007f"]',
     f'[server] extra_args[1]: {CONTROL}, got "--x=\\u007f"'),
    ('[tls]\nhostnames = ["a.example", "b.example\\u0085"]',
     f'[tls] hostnames[1]: {CONTROL}, got "b.example\\u0085"'),
    ('[kernel]\npackages = ["pandas\\u001b[2J"]',
     f'[kernel] packages[0]: {CONTROL}, got "pandas\\u001b[2J"'),
    ('[auth]\npassword_file = "pass\\nword"',
     f'[auth] password_file: {CONTROL}, got "pass\\nword"'),
    ('[paths]\nstate_dir = "/var/lib/x\\n"', f'[paths] state_dir: {CONTROL}, got "/var/lib/x\\n"'),
])
def test_control_characters_in_any_string_are_refused_in_one_escaped_line(tmp_path, text, line):
    assert errors(text, tmp_path) == [f"{tmp_path / 'settings.toml'}: {line}"]


def test_an_unknown_key_with_control_characters_is_named_escaped(tmp_path):
    assert errors('[server]\n"a\\nb" = 1\n', tmp_path) == [
        f"{tmp_path}/settings.toml: [server] a\\u000ab: unknown key"]


# --- secrets: what is wrong is said, what was given never --------------------------------------

SECRET = "Tr0ub4dor-MyRealPassword"


@pytest.mark.parametrize("text, line", [
    (f'[auth]\npassword_hash = "{SECRET}"',
     '[auth] password_hash: must be a hash as printed by "jupyter-remote password --print" '
     "(argon2:$argon2id$...)"),
    (f'[auth]\npassword_hash = ["{SECRET}"]', "[auth] password_hash: must be a string"),
    (f'[auth]\npassword_hash = "{SECRET}\\n"', f"[auth] password_hash: {CONTROL}"),
    (f'[auth]\npassword_hsh = "{SECRET}"',
     "[auth] password_hsh: unknown key (did you mean password_hash?)"),
    (f'[server]\npassword_hash = "{SECRET}"', "[server] password_hash: unknown key"),
    (f'[server.extra]\npassword_hash = "{SECRET}"',
     "[server] extra: unknown key (did you mean extra_args?)"),
    (f'password_hash = "{SECRET}"',
     "password_hash: a key outside any section (did you mean [auth] password_hash?)"),
    (f'auth = "{SECRET}"', "[auth]: must be a table"),
    (f'[auth.password_hash]\nx = "{SECRET}"', "[auth] password_hash: must be a string"),
    (f'[secrets]\npassword = "{SECRET}"', "[secrets]: unknown section (did you mean [server]?)"),
])
def test_a_secret_is_never_echoed_whatever_is_wrong(tmp_path, text, line):
    assert errors(text, tmp_path) == [f"{tmp_path / 'settings.toml'}: {line}"]
    assert errors(text, tmp_path, euid=ROOT)[-1] == f"{tmp_path / 'settings.toml'}: {line}"


def test_check_never_prints_a_password_typed_as_the_hash(tmp_path, account):
    path = tmp_path / "settings.toml"
    path.write_text(settings_text({
        "server": {"ip": "127.0.0.1", "port": 9999, "user": account.name},
        "auth": {"password_hash": SECRET},
        "paths": {"state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run")},
    }))
    result = cli("check", "--settings", str(path))
    assert result.returncode == 78
    assert result.stderr.startswith(f"{path}: [auth] password_hash: must be a hash"), result.stderr
    assert SECRET not in result.stdout + result.stderr
    # Nor after another mistake: every error of the file is reported, none with the value.
    path.write_text(path.read_text() + f'password_hsh = "{SECRET}"\n')
    result = cli("check", "--settings", str(path))
    assert result.returncode == 78 and len(result.stderr.splitlines()) == 2
    assert SECRET not in result.stdout + result.stderr


# --- the serving account: not root in all but name ---------------------------------------------


@pytest.fixture
def make_system_account():
    """Real accounts (useradd), removed after the test; as root only."""
    if os.geteuid() != 0:
        pytest.skip("making accounts needs root")
    made: list[str] = []

    def make(*options: str) -> str:
        name = f"jrpriv{uuid.uuid4().hex[:8]}"
        subprocess.run(["useradd", "--no-create-home", *options, name], check=True,
                       capture_output=True)
        made.append(name)
        return name

    yield make
    for name in made:
        subprocess.run(["userdel", name], capture_output=True, check=False)


@pytest.mark.parametrize("options, group", [
    (["--gid", "0"], "root"),
    (["--user-group", "--groups", "sudo"], "sudo"),
    (["--user-group", "--groups", "users,adm"], "adm"),
    (["--gid", "disk"], "disk"),
])
def test_an_account_in_a_privileged_group_is_refused_naming_the_group(tmp_path, make_system_account,
                                                                       options, group):
    name = make_system_account(*options)
    assert errors(f'[server]\nuser = "{name}"\n', tmp_path, euid=ROOT) == [
        f'{tmp_path}/settings.toml: [server] user: "{name}" is in the privileged group "{group}", '
        "and every notebook would be too: use an account without it"]


def test_an_ordinary_account_is_accepted(tmp_path, make_system_account):
    name = make_system_account("--user-group", "--groups", "users")
    assert pwd.getpwnam(name).pw_gid != 0
    assert loads(f'[server]\nuser = "{name}"\n', tmp_path, euid=ROOT).server.user == name


# --- trust_xheaders: check warns when any client could choose its address ---------------------


@pytest.mark.parametrize("args, trusted", [
    (["--ServerApp.trust_xheaders=True"], True),
    (["--ServerApp.trust_xheaders=true"], True),
    (["--NotebookApp.trust-xheaders", "1"], True),
    (["--serverapp.TRUST_XHEADERS=yes"], True),
    (["--ServerApp.trust_xheaders=True", "--ServerApp.trust_xheaders=False"], False),
    (["--ServerApp.trust_xheaders=0"], False),
    (["--ServerApp.trust_xheaders_not=True", "--debug"], False),
    ([], False),
])
def test_trust_xheaders_is_recognised_in_any_spelling(args, trusted):
    assert trusts_xheaders(args) is trusted


def test_check_warns_about_trust_xheaders_on_a_public_address(tmp_path, account):
    path = tmp_path / "settings.toml"

    def check(ip: str) -> subprocess.CompletedProcess[str]:
        path.write_text(settings_text({
            "server": {"ip": ip, "port": 9999, "user": account.name,
                       "extra_args": ["--ServerApp.trust_xheaders=True"]},
            "tls": {"cloud_metadata": False},
            "paths": {"state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run")},
        }))
        return cli("check", "--settings", str(path))

    public = check("0.0.0.0")
    assert public.returncode == 0, public.stderr
    assert (f"warning: {path}: [server] extra_args: trust_xheaders is on while [server] ip is "
            "0.0.0.0") in public.stderr
    assert "overwrites X-Real-IP and X-Forwarded-For" in public.stderr
    local = check("127.0.0.1")
    assert local.returncode == 0 and "trust_xheaders" not in local.stderr, local.stderr


# --- property-based: whatever the document, the loader accepts or raises our own error ---------

KEYS = {
    section: [*model.annotation.model_fields, "bogus"]
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


secret_places = st.sampled_from([("auth", "password_hash"), ("auth", "password_hsh"),
                                 ("server", "password_hash"), ("auth", "bogus"),
                                 ("bogus", "password_hash")])


@hypothesis_settings(max_examples=300, deadline=None)
@given(documents, secret_places,
       st.sampled_from([SECRET, [SECRET], {"x": SECRET}, SECRET + "\x85"]))
def test_a_secret_anywhere_secret_keys_or_unknown_keys_go_is_never_echoed(document, place, value):
    section = document.get(place[0])
    document = {**document, place[0]: {**(section if isinstance(section, dict) else {}),
                                       place[1]: value}}
    try:
        validate(document, Path("/etc/jupyter-remote/settings.toml"), euid=USER)
    except SettingsError as error:
        assert not any(SECRET in line for line in error.lines), error.lines


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_accepted_or_raises_settings_error(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "settings.toml"
    path.write_text(text)
    try:
        load(path, euid=USER)
    except SettingsError as error:
        assert all(line.startswith(f"{path}: ") for line in error.lines)
