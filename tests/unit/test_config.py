"""criadapt.config: defaults, strict loading, error messages, overrides, TOML output, docs."""

from __future__ import annotations

import datetime
import re
import tomllib
from pathlib import Path

import attrs
import pytest

from criadapt import config as config_module
from criadapt.config import (
    DEFAULT_PATH,
    CniConfig,
    Config,
    ConfigError,
    MetricsConfig,
    MirrorConfig,
    RegistryConfig,
    StreamingConfig,
    backend_section,
    config_to_toml,
    default_config_toml,
    load_config,
    loads_config,
    schema_keys,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

FULL = """\
backend = "fake"
listen = "unix:///tmp/criadapt/test.sock"
root = "/srv/criadapt"
state = "/tmp/criadapt-state"
grace_period = 2
log_level = "debug"

[streaming]
address = "0.0.0.0"
port = 10010

[cni]
conf_dir = "/etc/cni/other.d"
bin_dirs = ["/opt/cni/bin"]

[registry]
insecure = ["registry.local:5000"]

[registry.mirrors."docker.io"]
endpoints = ["https://mirror.gcr.io", "http://10.0.0.2:5000"]

[metrics]
address = "127.0.0.1:9090"

[backends.fake]
delay = 0.5
names = ["a", "b"]
"""

FULL_CONFIG = Config(
    backend="fake",
    listen="unix:///tmp/criadapt/test.sock",
    root=Path("/srv/criadapt"),
    state=Path("/tmp/criadapt-state"),
    grace_period=2.0,
    log_level="debug",
    streaming=StreamingConfig(address="0.0.0.0", port=10010),
    cni=CniConfig(conf_dir=Path("/etc/cni/other.d"), bin_dirs=(Path("/opt/cni/bin"),)),
    registry=RegistryConfig(
        insecure=("registry.local:5000",),
        mirrors={
            "docker.io": MirrorConfig(endpoints=("https://mirror.gcr.io", "http://10.0.0.2:5000"))
        },
    ),
    metrics=MetricsConfig(address="127.0.0.1:9090"),
    backends={"fake": {"delay": 0.5, "names": ["a", "b"]}},
)


def write(tmp_path: Path, text: str, name: str = "criadapt.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert info.value.source == str(path)
    return info.value


# --- defaults and the happy path ---------------------------------------------------------------


def test_defaults() -> None:
    config = Config()
    assert config.backend == "runc"
    assert config.listen == "unix:///run/criadapt/criadapt.sock"
    assert config.root == Path("/var/lib/criadapt")
    assert config.state == Path("/run/criadapt")
    assert config.grace_period == 10.0
    assert config.log_level == "info"
    assert config.streaming == StreamingConfig(address="127.0.0.1", port=0)
    assert config.cni.conf_dir == Path("/etc/cni/net.d")
    assert config.cni.bin_dirs == (Path("/opt/cni/bin"), Path("/usr/lib/cni"))
    assert config.registry.insecure == ()
    assert config.registry.mirrors == {}
    assert config.metrics.address == ""
    assert config.backends == {}
    assert str(DEFAULT_PATH) == "/etc/criadapt/criadapt.toml"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_no_path_and_no_default_file_gives_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_module, "DEFAULT_PATH", tmp_path / "absent.toml")
    assert load_config() == Config()


def test_no_path_reads_the_default_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "DEFAULT_PATH", write(tmp_path, 'backend = "fake"'))
    assert load_config().backend == "fake"


def test_full_file(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, FULL)) == FULL_CONFIG
    assert load_config(str(write(tmp_path, FULL))) == FULL_CONFIG


def test_integer_grace_period_is_a_float(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "grace_period = 3"))
    assert config.grace_period == 3.0
    assert isinstance(config.grace_period, float)


# --- errors name the key and the file --------------------------------------------------------


def test_unknown_top_level_key(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'bakend = "fake"')
    assert error.keys == ("bakend",)
    assert "bakend: unknown key" in str(error)
    assert "did you mean backend?" in str(error)


def test_unknown_nested_key_is_named_by_its_dotted_path(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[streaming]\nprot = 10010\n")
    assert error.keys == ("streaming.prot",)
    assert "streaming.prot: unknown key" in str(error)
    assert "streaming.port" in str(error)  # the suggestion


def test_unknown_key_in_a_mirror(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[registry.mirrors."docker.io"]\nendpoint = ["https://m"]\n')
    assert error.keys == ('registry.mirrors."docker.io".endpoint',)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('streaming.port = "10010"', "streaming.port", "expected an integer, got a string"),
        ("streaming.port = 1.5", "streaming.port", "expected an integer, got a float"),
        ("streaming.port = true", "streaming.port", "expected an integer, got a boolean"),
        ("backend = 5", "backend", "expected a string, got an integer"),
        ("grace_period = true", "grace_period", "expected a number, got a boolean"),
        ("root = 1", "root", "expected a path string"),
        ("streaming = 5", "streaming", "expected a table, got an integer"),
        ('cni.bin_dirs = "/opt/cni/bin"', "cni.bin_dirs", "expected an array, got a string"),
        ('cni.bin_dirs = ["/opt", 3]', "cni.bin_dirs[1]", "expected a path string"),
        ("registry.mirrors = 5", "registry.mirrors", "expected a table"),
        ("backends.runc = 5", "backends.runc", "expected a table"),
    ],
)
def test_wrong_type_is_named(tmp_path: Path, text: str, key: str, expected: str) -> None:
    error = load_error(tmp_path, text)
    assert error.keys == (key,)
    assert f"{key}: {expected}" in str(error)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("streaming.port = 65536", "streaming.port"),
        ("streaming.port = -1", "streaming.port"),
        ("grace_period = -0.5", "grace_period"),
        ("grace_period = nan", "grace_period"),
        ('log_level = "verbose"', "log_level"),
        ('backend = ""', "backend"),
        ('root = "relative/dir"', "root"),
        ('state = ""', "state"),
        ('cni.bin_dirs = ["/opt/cni/bin", "bin"]', "cni.bin_dirs[1]"),
        ('registry.insecure = ["https://registry.local"]', "registry.insecure[0]"),
        ('metrics.address = "9090"', "metrics.address"),
        ('metrics.address = "::1:9090"', "metrics.address"),
        ('metrics.address = "localhost:http"', "metrics.address"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, key: str) -> None:
    assert load_error(tmp_path, text).keys == (key,)


@pytest.mark.parametrize(
    "listen",
    [
        "tcp://127.0.0.1:1234",
        "/run/criadapt.sock",
        "unix://run/criadapt.sock",
        "unix:///",
        "unix:",
        "",
    ],
)
def test_bad_listen_url(tmp_path: Path, listen: str) -> None:
    error = load_error(tmp_path, f'listen = "{listen}"')
    assert error.keys == ("listen",)
    assert "unix://" in str(error)


@pytest.mark.parametrize("address", ["", "127.0.0.1:9090", "[::1]:9090", ":9090", "host:0"])
def test_good_metrics_addresses(address: str) -> None:
    assert loads_config(f'metrics.address = "{address}"').metrics.address == address


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'bogus = 1\n[streaming]\nport = "x"\n[cni]\nextra = 1\n')
    assert set(error.keys) == {"bogus", "streaming.port", "cni.extra"}
    for key in error.keys:
        assert f"\n  {key}: " in str(error)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="port"):
        StreamingConfig(port=70000)
    with pytest.raises(ValueError, match="listen"):
        Config(listen="tcp://x")


# --- files ---------------------------------------------------------------------------------


def test_missing_explicit_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path)


def test_syntax_error(tmp_path: Path) -> None:
    path = write(tmp_path, "[streaming\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    assert "TOML syntax error" in message
    assert "line 1" in message  # tomllib's own message, with its position


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'backend = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path)


# --- overrides -----------------------------------------------------------------------------


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    config = load_config(
        path,
        overrides={
            "backend": "other",
            "listen": "unix:///tmp/x.sock",
            "streaming.port": 1234,
            "root": tmp_path,  # os.PathLike is fine
            "cni.bin_dirs": ("/a", "/b"),
            'registry.mirrors."docker.io".endpoints': ["https://m"],
            "backends.fake.delay": 2.0,
            "log_level": None,  # not given: the file's value stays
        },
    )
    assert config.backend == "other"
    assert config.listen == "unix:///tmp/x.sock"
    assert config.streaming == StreamingConfig(address="0.0.0.0", port=1234)
    assert config.root == tmp_path
    assert config.cni.bin_dirs == (Path("/a"), Path("/b"))
    assert config.registry.mirrors == {"docker.io": MirrorConfig(endpoints=("https://m",))}
    assert config.backends == {"fake": {"delay": 2.0, "names": ["a", "b"]}}
    assert config.log_level == "debug"
    assert load_config(path) == FULL_CONFIG  # nothing shared was mutated


def test_overrides_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "DEFAULT_PATH", tmp_path / "absent.toml")
    config = load_config(overrides={"backend": "fake", "grace_period": None})
    assert config == attrs.evolve(Config(), backend="fake")


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"streaming.port": "x"}, "streaming.port"),
        ({"listen": "tcp://x"}, "listen"),
        ({"bogus": 1}, "bogus"),
        ({"streaming.bogus": 1}, "streaming.bogus"),
    ],
)
def test_bad_overrides_are_named(overrides: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads_config("", overrides=overrides)
    assert info.value.keys == (key,)
    assert "command-line flags" in str(info.value)


def test_override_through_a_non_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a table"):
        load_config(write(tmp_path, 'backend = "x"'), overrides={"backend.name": 1})


@pytest.mark.parametrize("key", ["", "a b", "a..b", "a = 1\nb"])
def test_malformed_override_key(key: str) -> None:
    with pytest.raises(ConfigError, match="override key"):
        loads_config("", overrides={key: 1})


def test_file_errors_name_the_file_not_the_flags(tmp_path: Path) -> None:
    path = write(tmp_path, "streaming.port = -1")
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides={"backend": "fake"})
    assert info.value.source == str(path)


# --- TOML output -------------------------------------------------------------------------------


def test_default_config_toml_round_trips(tmp_path: Path) -> None:
    text = default_config_toml()
    assert loads_config(text) == Config()
    assert load_config(write(tmp_path, text)) == Config()


def test_default_config_toml_documents_every_key() -> None:
    text = default_config_toml()
    lines = text.splitlines()
    for key in schema_keys():
        leaf = key.rpartition(".")[2]
        if key == "registry.mirrors.<host>.endpoints":  # in the commented example
            assert '# [registry.mirrors."docker.io"]\n# endpoints = ' in text
            continue
        if key == "backends.<name>":
            assert "# [backends.<name>]" in text
            continue
        if leaf in ("streaming", "cni", "registry", "metrics"):
            index = lines.index(f"[{key}]")
        elif leaf in ("mirrors", "backends"):
            assert f"[{key}." in text
            continue
        else:
            index = next(i for i, line in enumerate(lines) if line.startswith(f"{leaf} = "))
        assert lines[index - 1].startswith("# "), f"{key} has no comment above it"
    # every attrs field carries its doc
    for cl in (Config, StreamingConfig, CniConfig, RegistryConfig, MirrorConfig, MetricsConfig):
        for field in attrs.fields(cl):
            assert field.metadata.get("doc"), f"{cl.__name__}.{field.name} has no doc"


def test_commented_examples_are_valid() -> None:
    text = default_config_toml()
    mirror = [line.removeprefix("# ") for line in text.splitlines() if "mirror.gcr.io" in line]
    example = '[registry.mirrors."docker.io"]\n' + "\n".join(mirror)
    config = loads_config(example)
    assert config.registry.mirrors["docker.io"].endpoints == ("https://mirror.gcr.io",)


def test_config_to_toml_round_trips_a_full_config() -> None:
    config = attrs.evolve(
        FULL_CONFIG,
        listen='unix:///tmp/odd "name"\\x.sock',
        registry=RegistryConfig(
            insecure=("localhost:5000",),
            mirrors={
                "docker.io": MirrorConfig(endpoints=("https://a",)),
                "quay": MirrorConfig(),
            },
        ),
        backends={
            "fake": {
                "flag": True,
                "n": 3,
                "inf": float("inf"),
                "when": datetime.date(2024, 1, 2),
                "nested": {"items": [1, {"k": "tab\there\x7f"}], "empty": {}},
            },
            "with.dot": {},
        },
    )
    text = config_to_toml(config)
    tomllib.loads(text)  # well-formed
    assert loads_config(text) == config


# --- backend sections --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class FakeSettings:
    delay: float = 0.0
    names: tuple[str, ...] = ()
    verbose: bool = False


@attrs.frozen(kw_only=True)
class NeedsBinary:
    binary: str


def test_backend_section_happy_path(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL))
    assert backend_section(config, "fake", FakeSettings) == FakeSettings(
        delay=0.5, names=("a", "b")
    )
    assert backend_section(config, "absent", FakeSettings) == FakeSettings()


@pytest.mark.parametrize(
    ("table", "key", "expected"),
    [
        ({"dealy": 1.0}, "backends.fake.dealy", "unknown key (did you mean backends.fake.delay?)"),
        ({"verbose": 1}, "backends.fake.verbose", "expected a boolean"),
        ({"names": "a"}, "backends.fake.names", "expected an array"),
    ],
)
def test_backend_section_errors(table: dict[str, object], key: str, expected: str) -> None:
    config = Config(backends={"fake": table})
    with pytest.raises(ConfigError) as info:
        backend_section(config, "fake", FakeSettings)
    assert info.value.keys == (key,)
    assert f"{key}: {expected}" in str(info.value)


def test_backend_section_required_key() -> None:
    with pytest.raises(ConfigError) as info:
        backend_section(Config(), "runc", NeedsBinary)
    assert info.value.keys == ("backends.runc.binary",)


# --- mirrors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["mirror.gcr.io", "ftp://mirror", "https://", "//mirror", "", "unix:///x"]
)
def test_mirror_endpoint_must_be_an_http_url(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        loads_config(f'[registry.mirrors."docker.io"]\nendpoints = ["https://ok", "{url}"]')
    assert info.value.keys == ('registry.mirrors."docker.io".endpoints[1]',)
    assert "http://" in str(info.value)


def test_mirror_endpoints_must_be_strings() -> None:
    with pytest.raises(ConfigError) as info:
        loads_config('[registry.mirrors."docker.io"]\nendpoints = "https://m"')
    assert info.value.keys == ('registry.mirrors."docker.io".endpoints',)


def test_mirror_host_is_checked() -> None:
    with pytest.raises(ConfigError) as info:
        loads_config('[registry.mirrors."https://docker.io"]\nendpoints = ["https://m"]')
    assert info.value.keys == ('registry.mirrors."https://docker.io"',)


def test_mirrors_keep_their_order() -> None:
    text = '[registry.mirrors.b]\nendpoints = ["http://b"]\n[registry.mirrors.a]\n'
    assert list(loads_config(text).registry.mirrors) == ["b", "a"]


# --- the reference documentation -------------------------------------------------------------


def test_every_key_is_in_the_docs() -> None:
    doc = re.sub(r"```.*?```", "", DOCS.read_text(), flags=re.DOTALL)  # drop code blocks
    quoted = set(re.findall(r"`([^`\n]+)`", doc))
    missing = [key for key in schema_keys() if key not in quoted]
    assert not missing, f"docs/configuration.md lacks {missing}"


def test_the_docs_example_loads() -> None:
    doc = DOCS.read_text()
    blocks = re.findall(r"```toml\n(.*?)```", doc, flags=re.DOTALL)
    assert blocks
    for block in blocks:
        loads_config(block, source="docs/configuration.md")


def test_the_docs_state_the_defaults() -> None:
    doc = DOCS.read_text()
    defaults = Config()
    for key in ("backend", "listen", "root", "state", "log_level"):
        assert f"| `{key}` |" in doc
        assert f'`"{getattr(defaults, key)}"`' in doc
    assert '`"127.0.0.1"`' in doc
    assert '`["/opt/cni/bin", "/usr/lib/cni"]`' in doc
