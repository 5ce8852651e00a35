"""Profiles: what wins over what, the file's mode, and TOML that reads back as written."""

import stat

import pytest

from ec2cl import config
from ec2cl.errors import USAGE, CliError


@pytest.fixture(autouse=True)
def config_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / "cfg" / "ec2cl" / "config.toml"


def test_no_file_means_the_local_server_and_no_token(config_home):
    profile = config.load(environ={})
    assert (profile.name, profile.url, profile.token, profile.path) == ("default", "http://127.0.0.1:8000", None,
                                                                        config_home)


def test_the_environment_overrides_the_profile(config_home):
    config.save("default", "http://10.0.0.5:8000", "file-token")
    config.save("team", "https://ec2.example.com/", "team-token")
    assert config.load(environ={}).token == "file-token"
    team = config.load(environ={"EC2CL_PROFILE": "team"})
    assert (team.url, team.token) == ("https://ec2.example.com", "team-token")  # no trailing slash
    assert config.load("default", environ={"EC2CL_PROFILE": "team"}).token == "file-token"  # --profile wins
    both = config.load(environ={"EC2CL_PROFILE": "team", "EC2CL_URL": "http://127.0.0.1:9000",
                                "EC2CL_TOKEN": "env-token"})
    assert (both.url, both.token) == ("http://127.0.0.1:9000", "env-token")


def test_login_writes_mode_0600_and_keeps_the_other_profiles(config_home):
    config.save("team", "https://ec2.example.com", "first")
    path = config.save("default", "http://127.0.0.1:8000", 'a"quoted"\\token#[x]=1')
    config.save("caf\u00e9 \"x\"\x7f", "http://127.0.0.1:8000", "t")  # any profile name
    assert path == config_home
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert config.load(environ={}).token == 'a"quoted"\\token#[x]=1'  # read back exactly
    assert config.load("team", environ={}).token == "first"
    assert config.load("caf\u00e9 \"x\"\x7f", environ={}).token == "t"
    assert list(path.parent.iterdir()) == [path]  # no temporary file left


def test_a_token_others_can_read_is_warned_about(config_home):
    path = config.save("default", "http://127.0.0.1:8000", "t")
    assert config.load(environ={}).warnings == ()
    path.chmod(0o644)
    [warning] = config.load(environ={}).warnings
    assert warning == f"{path} holds a token and others may read it: chmod 600 {path}"


@pytest.mark.parametrize("text, message", [
    ("[profiles.default\n", "is not valid TOML"),
    ("profiles = 3\n", "[profiles.<name>] tables with url and token expected"),
    ('[profiles.default]\nurl = "ftp://x"\n', "the API URL must start with http:// or https://, not 'ftp://x'"),
])
def test_a_broken_file_is_a_usage_error_that_says_what_is_wrong(config_home, text, message):
    config_home.parent.mkdir(parents=True)
    config_home.write_text(text)
    with pytest.raises(CliError) as raised:
        config.load(environ={})
    assert raised.value.exit_code == USAGE and message in raised.value.message


def test_an_unknown_profile_is_a_usage_error_naming_the_known_ones(config_home):
    config.save("team", "https://ec2.example.com", "t")
    with pytest.raises(CliError) as raised:
        config.load("staging", environ={})
    assert (raised.value.exit_code, raised.value.code) == (USAGE, "unknown_profile")
    assert "(profiles: team)" in raised.value.message


@pytest.mark.parametrize("token", ["SECRETx\r", "SECRET t\u00f6k\u00e9n", "two\nlines"])
def test_a_token_no_header_can_carry_is_refused_without_showing_it(config_home, token):
    with pytest.raises(CliError) as raised:
        config.load(environ={"EC2CL_TOKEN": token})
    assert (raised.value.exit_code, raised.value.code) == (USAGE, "bad_token") and "SECRET" not in raised.value.line()


def test_a_url_with_a_password_is_shown_without_it_and_a_broken_one_is_a_usage_error(config_home):
    assert config.shown("http://me:SECRETPW@127.0.0.1:9/") == "http://127.0.0.1:9/"
    with pytest.raises(CliError) as raised:
        config.load(environ={"EC2CL_URL": "http://[::1"})
    assert (raised.value.exit_code, raised.value.code) == (USAGE, "bad_config")
    assert config.load("team", environ={}, new=True).name == "team"  # login may name a new profile
