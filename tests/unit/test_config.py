"""config.toml: defaults, every rule, and all problems reported at once."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from banger.config import Config, config_problems, load_config
from banger.errors import ConfigError
from banger.paths import Paths

HOME = Path("/home/alice")


def problems_for(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return config_problems(path, home=HOME)


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return load_config(path, home=HOME)


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.toml", home=HOME)
    assert config == Config()
    assert config.vmm == "auto"
    assert config.vm.vcpus == 2
    assert config.vm.memory_mib == 1024
    assert config.vm.work_disk_size == 4 * 1024**3
    assert config.vm.root_disk_size is None
    assert config.vm.image == "debian:bookworm"
    assert config.vm.kernel == "debian"
    assert config.vm.init == "systemd"
    assert config.network.bridge == "banger0"
    assert config.network.subnet == IPv4Network("172.30.0.0/24")
    assert config.network.gateway == IPv4Address("172.30.0.1")
    assert config.network.dns_domain == "banger"
    assert config.network.dns_upstreams == ()
    assert config.firecracker.jailer is False
    assert config.daemon.ops_retention_days == 7
    assert config.images.debian_mirror is None
    assert config.kernel.debian_mirror is None
    assert config.file_sync == ()


def test_default_path_comes_from_paths(banger_home: Path) -> None:
    paths = Paths.from_env()
    paths.config_file.parent.mkdir(parents=True)
    paths.config_file.write_text("[vm]\nvcpus = 4\n")
    assert load_config(paths=paths, home=HOME).vm.vcpus == 4
    assert load_config(home=HOME).vm.vcpus == 4  # BANGER_HOME from the fixture


def test_config_problems_on_missing_named_file(tmp_path: Path) -> None:
    assert config_problems(tmp_path / "nope.toml", home=HOME) == ["file does not exist"]
    assert config_problems(tmp_path / "nope.toml", home=HOME, missing_ok=True) == []


def test_models_are_frozen(tmp_path: Path) -> None:
    config = load(tmp_path, "[vm]\nvcpus = 3\n")
    with pytest.raises(ValueError, match="frozen"):
        setattr(config.vm, "vcpus", 5)  # noqa: B010 (mypy cannot see pydantic frozen)


def test_full_valid_file(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
vmm = "qemu"
[vm]
vcpus = 4
memory_mib = "2G"
work_disk_size = "8G"
root_disk_size = "10GiB"
image = "ubuntu:24.04"
kernel = "mine"
init = "fast"
[network]
bridge = "br-test"
subnet = "10.99.0.0/16"
dns_domain = "VMs.Example."
dns_upstreams = ["9.9.9.9", "2620:fe::fe"]
[firecracker]
binary = "/opt/fc/firecracker"
jailer_binary = "jailer"
jailer = true
[daemon]
stop_vms_on_shutdown = true
ops_retention_days = 30
[images]
debian_mirror = "http://mirror.example/debian/"
[kernel]
debian_mirror = "https://mirror.example/debian"
[[file_sync]]
host = "~/.config/gh/hosts.yml"
guest = "~/.config/gh/hosts.yml"
[[file_sync]]
host = "/home/alice/bin/tool"
guest = "/root/bin/tool"
mode = "0755"
""",
    )
    assert config.vmm == "qemu"
    assert config.vm.memory_mib == 2048
    assert config.vm.root_disk_size == 10 * 1024**3
    assert config.network.dns_domain == "vms.example"
    assert config.network.gateway == IPv4Address("10.99.0.1")
    assert [str(a) for a in config.network.dns_upstreams] == ["9.9.9.9", "2620:fe::fe"]
    assert config.images.debian_mirror == "http://mirror.example/debian"
    first, second = config.file_sync
    assert first.host == HOME / ".config/gh/hosts.yml"
    assert first.guest == ".config/gh/hosts.yml"
    assert first.guest_display == "~/.config/gh/hosts.yml"
    assert str(first.guest_path) == "/root/.config/gh/hosts.yml"
    assert first.mode == 0o600
    assert second.mode == 0o755
    # The effective config (what `banger config show --json` prints) loads back equal.
    data = config.to_json_dict()
    assert data["file_sync"][1] == {
        "host": "/home/alice/bin/tool",
        "guest": "~/bin/tool",
        "mode": "0755",
    }
    assert data["network"]["subnet"] == "10.99.0.0/16"
    assert Config.model_validate(data, context={"home": HOME}) == config
    assert Config.model_validate(Config().to_json_dict(), context={"home": HOME}) == Config()


# -- file_sync rules, one table per field -----------------------------------------

HOST_ACCEPTED = [
    ("~/.gitconfig", HOME / ".gitconfig"),
    ("~/.config/gh/hosts.yml", HOME / ".config/gh/hosts.yml"),
    ("~//a//b/", HOME / "a/b"),
    ("~/./a/./b", HOME / "a/b"),
    ("/home/alice/.ssh/id_ed25519.pub", HOME / ".ssh/id_ed25519.pub"),
    ("/home/alice//x/", HOME / "x"),
    ("~/...", HOME / "..."),
    ("~/a..b", HOME / "a..b"),
]

HOST_REJECTED = [
    ("", "must not be empty"),
    ("relative/file", "must start with ~/ or be an absolute path"),
    ("./x", "must start with ~/ or be an absolute path"),
    ("~bob/.gitconfig", "~user paths are not supported"),
    ("~root", "~user paths are not supported"),
    ("~/../bob/x", "must not contain '..' segments"),
    ("~/a/../../etc/passwd", "must not contain '..' segments"),
    ("/home/alice/../bob/x", "must not contain '..' segments"),
    ("/home/alice/..", "must not contain '..' segments"),
    ("/etc/passwd", "must be inside your home /home/alice"),
    ("/home/alicex/file", "must be inside your home /home/alice"),
    ("/home", "must be inside your home /home/alice"),
    ("/", "must be inside your home /home/alice"),
    ("~", "not the home itself"),
    ("~/", "not the home itself"),
    ("/home/alice/", "not the home itself"),
    ("~/a\nb", "control characters"),
]


def _file_sync_toml(host: str = "~/f", guest: str = "~/f", mode: str | None = None) -> str:
    def q(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    text = f"[[file_sync]]\nhost = {q(host)}\nguest = {q(guest)}\n"
    if mode is not None:
        text += f"mode = {mode}\n"
    return '[[file_sync]]\nhost = "~/first"\nguest = "~/first"\n' + text


@pytest.mark.parametrize(("host", "expected"), HOST_ACCEPTED)
def test_file_sync_host_accepted(tmp_path: Path, host: str, expected: Path) -> None:
    config = load(tmp_path, _file_sync_toml(host=host))
    assert config.file_sync[1].host == expected


@pytest.mark.parametrize(("host", "message"), HOST_REJECTED)
def test_file_sync_host_rejected(tmp_path: Path, host: str, message: str) -> None:
    problems = problems_for(tmp_path, _file_sync_toml(host=host))
    assert len(problems) == 1, problems
    assert problems[0].startswith("file_sync[1].host: ")
    assert message in problems[0]


def test_file_sync_host_with_trailing_slash_home(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(_file_sync_toml(host="~/x"))
    assert load_config(path, home=Path("/home/alice/")).file_sync[1].host == HOME / "x"


def test_file_sync_host_symlink_is_not_resolved(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "link").symlink_to("/etc/hostname")
    path = tmp_path / "c.toml"
    path.write_text(_file_sync_toml(host="~/link"))
    assert load_config(path, home=home).file_sync[1].host == home / "link"


GUEST_ACCEPTED = [
    ("~/.gitconfig", ".gitconfig"),
    ("~/.config/gh/hosts.yml", ".config/gh/hosts.yml"),
    ("/root/.ssh/config", ".ssh/config"),
    ("/root//a/./b/", "a/b"),
    ("~/a..b", "a..b"),
]

GUEST_REJECTED = [
    ("", "must not be empty"),
    ("~", "not the directory itself"),
    ("~/", "not the directory itself"),
    ("/root", "not the directory itself"),
    ("/root/", "not the directory itself"),
    ("/root/.", "not the directory itself"),
    ("~bob/x", "~user paths are not supported"),
    ("/etc/passwd", "must be under ~/ or /root/"),
    ("/rootfs/x", "must be under ~/ or /root/"),
    ("/home/alice/x", "must be under ~/ or /root/"),
    ("relative", "must be under ~/ or /root/"),
    ("~/../etc/shadow", "must not contain '..' segments"),
    ("/root/a/../../etc", "must not contain '..' segments"),
    ("~/a\nrm x", "control characters"),
]


@pytest.mark.parametrize(("guest", "expected"), GUEST_ACCEPTED)
def test_file_sync_guest_accepted(tmp_path: Path, guest: str, expected: str) -> None:
    assert load(tmp_path, _file_sync_toml(guest=guest)).file_sync[1].guest == expected


@pytest.mark.parametrize(("guest", "message"), GUEST_REJECTED)
def test_file_sync_guest_rejected(tmp_path: Path, guest: str, message: str) -> None:
    problems = problems_for(tmp_path, _file_sync_toml(guest=guest))
    assert len(problems) == 1, problems
    assert problems[0].startswith("file_sync[1].guest: ")
    assert message in problems[0]


MODE_ACCEPTED = [
    (None, 0o600),
    ('"0755"', 0o755),
    ('"600"', 0o600),
    ('"0o644"', 0o644),
    ('"0"', 0),
    ('"07777"', 0o7777),
    ('"4755"', 0o4755),
]

MODE_REJECTED = [
    ('"0800"', "must be an octal string"),
    ('"rw-r--r--"', "must be an octal string"),
    ('""', "must be an octal string"),
    ('" 0600"', "must be an octal string"),
    ('"-600"', "must be an octal string"),
    ('"17777"', "must be at most 07777"),
    ('"0o17777"', "must be at most 07777"),
    ("600", "quote it"),
    ("0o600", "quote it"),
    ("true", "must be an octal string"),
    ("6.0", "must be an octal string"),
    ('["0600"]', "must be an octal string"),
]


@pytest.mark.parametrize(("mode", "expected"), MODE_ACCEPTED)
def test_file_sync_mode_accepted(tmp_path: Path, mode: str | None, expected: int) -> None:
    assert load(tmp_path, _file_sync_toml(mode=mode)).file_sync[1].mode == expected


@pytest.mark.parametrize(("mode", "message"), MODE_REJECTED)
def test_file_sync_mode_rejected(tmp_path: Path, mode: str, message: str) -> None:
    problems = problems_for(tmp_path, _file_sync_toml(mode=mode))
    assert len(problems) == 1, problems
    assert problems[0].startswith("file_sync[1].mode: ")
    assert message in problems[0]


def test_file_sync_entry_shape(tmp_path: Path) -> None:
    assert problems_for(tmp_path, '[[file_sync]]\nguest = "~/x"\n') == [
        "file_sync[0].host: is required"
    ]
    assert problems_for(tmp_path, '[[file_sync]]\nhost = "~/x"\nguest = "~/x"\nowner = 0\n') == [
        "file_sync[0].owner: unknown key"
    ]
    assert problems_for(tmp_path, '[file_sync]\nhost = "~/x"\n') == [
        "file_sync: must be an array (got a table)"
    ]
    assert problems_for(tmp_path, "file_sync = [1]\n") == [
        "file_sync[0]: must be a table (got integer 1)"
    ]
    assert problems_for(tmp_path, '[[file_sync]]\nhost = 5\nguest = "~/x"\n') == [
        "file_sync[0].host: must be a string (got integer 5)"
    ]


def test_file_sync_duplicate_destination(tmp_path: Path) -> None:
    text = (
        '[[file_sync]]\nhost = "~/a"\nguest = "~/x"\n'
        '[[file_sync]]\nhost = "~/b"\nguest = "/root/x/"\n'
    )
    assert problems_for(tmp_path, text) == [
        "file_sync[1].guest: same destination as file_sync[0] (~/x)"
    ]


# -- other sections ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("colour = 1\n", "colour: unknown key"),
        ("[vm]\nvcpu = 2\n", 'vm.vcpu: unknown key (did you mean "vcpus"?)'),
        (
            '[network]\nsubnets = "10.0.0.0/24"\n',
            'network.subnets: unknown key (did you mean "subnet"?)',
        ),
        ("[daemon.extra]\nx = 1\n", "daemon.extra: unknown key"),
        ("[vmm]\nx = 1\n", "vmm: must be one of 'auto', 'firecracker' or 'qemu' (got a table)"),
        ("vm = 3\n", "vm: must be a table (got integer 3)"),
        ('[vm]\nvcpus = "2"\n', 'vm.vcpus: must be an integer (got string "2")'),
        ("[vm]\nvcpus = 2.0\n", "vm.vcpus: must be an integer (got float 2.0)"),
        ("[vm]\nvcpus = true\n", "vm.vcpus: must be an integer (got boolean true)"),
        ("[vm]\nvcpus = 0\n", "vm.vcpus: must be between 1 and 32 (got 0)"),
        ("[vm]\nvcpus = 33\n", "vm.vcpus: must be between 1 and 32 (got 33)"),
        ("[vm]\nvcpus = 48\n", "vm.vcpus: must be between 1 and 32 (got 48)"),
        ("[vm]\nmemory_mib = 64\n", "vm.memory_mib: must be between 128 and 1048576 MiB (got 64)"),
        ('[vm]\nmemory_mib = "1500K"\n', "vm.memory_mib: must be a whole number of MiB"),
        (
            '[vm]\ninit = "upstart"\n',
            "vm.init: must be one of 'systemd' or 'fast' (got string \"upstart\")",
        ),
        ('[vm]\nimage = ""\n', "vm.image: must not be empty"),
        ('[vm]\nimage = "a b"\n', "vm.image: must not contain whitespace"),
        (
            'vmm = "kvm"\n',
            "vmm: must be one of 'auto', 'firecracker' or 'qemu' (got string \"kvm\")",
        ),
        (
            '[daemon]\nstop_vms_on_shutdown = "yes"\n',
            "daemon.stop_vms_on_shutdown: must be true or false",
        ),
        (
            "[daemon]\nops_retention_days = 0\n",
            "daemon.ops_retention_days: must be between 1 and 3650",
        ),
        (
            '[firecracker]\nbinary = "bin/fc"\n',
            "firecracker.binary: must be a program name or an absolute path",
        ),
        ('[network]\nbridge = "br0:1"\n', "network.bridge: must be an interface name"),
        ('[network]\nbridge = "abcdefghijklmnop"\n', "network.bridge: must be an interface name"),
        ('[network]\ndns_domain = "-bad.example"\n', "network.dns_domain: must be a DNS name"),
        ('[network]\ndns_domain = "a..b"\n', "network.dns_domain: must be a DNS name"),
        (
            '[network]\ndns_upstreams = ["1.1.1.1", "x"]\n',
            "network.dns_upstreams[1]: must be an IP address",
        ),
        ('[network]\ndns_upstreams = "1.1.1.1"\n', "network.dns_upstreams: must be an array"),
        (
            '[images]\ndebian_mirror = "ftp://x/debian"\n',
            "images.debian_mirror: must be an http:// or https:// URL",
        ),
        (
            '[kernel]\ndebian_mirror = "https://"\n',
            "kernel.debian_mirror: must be an http:// or https:// URL",
        ),
    ],
)
def test_single_problem(tmp_path: Path, text: str, problem: str) -> None:
    problems = problems_for(tmp_path, text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(problem), problems


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"4G"', 4 * 1024**3),
        ('"4GiB"', 4 * 1024**3),
        ('"4gb"', 4 * 1024**3),
        ('"512M"', 512 * 1024**2),
        ('"1T"', 1024**4),
        ('"65536K"', 64 * 1024**2),
        ("1073741824", 1024**3),
        ('"1073741824"', 1024**3),
    ],
)
def test_size_strings_accepted(tmp_path: Path, value: str, expected: int) -> None:
    assert load(tmp_path, f"[vm]\nwork_disk_size = {value}\n").vm.work_disk_size == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"4X"', 'must be a size like "4G"'),
        ('"G"', 'must be a size like "4G"'),
        ('"-4G"', 'must be a size like "4G"'),
        ('"4.5G"', 'must be a size like "4G"'),
        ('""', 'must be a size like "4G"'),
        ("0", "must be a positive size"),
        ("-5", "must be a positive size"),
        ("true", 'must be a size like "4G"'),
        ("4.0", 'must be a size like "4G"'),
        ('"32M"', "must be between 64M and 16T (got 32M)"),
        ('"17T"', "must be between 64M and 16T (got 17T)"),
        ("100000000", "must be a whole number of MiB"),
    ],
)
def test_size_strings_rejected(tmp_path: Path, value: str, message: str) -> None:
    problems = problems_for(tmp_path, f"[vm]\nwork_disk_size = {value}\n")
    assert len(problems) == 1 and problems[0].startswith("vm.work_disk_size: "), problems
    assert message in problems[0]


@pytest.mark.parametrize(
    ("subnet", "ok"),
    [
        ("10.0.0.0/16", True),
        ("192.168.77.0/24", True),
        ("172.30.0.0/29", True),
        ("10.0.0.0/15", False),
        ("172.30.0.0/30", False),
        ("172.30.0.0/32", False),
        ("172.30.0.5/24", False),
        ("127.0.0.0/24", False),
        ("169.254.0.0/16", False),
        ("224.0.0.0/24", False),
        ("fd00::/64", False),
        ("banana", False),
    ],
)
def test_subnet_bounds(tmp_path: Path, subnet: str, ok: bool) -> None:
    problems = problems_for(tmp_path, f'[network]\nsubnet = "{subnet}"\n')
    if ok:
        assert problems == []
    else:
        assert len(problems) == 1 and problems[0].startswith("network.subnet: "), problems


def test_subnet_prefix_message(tmp_path: Path) -> None:
    assert problems_for(tmp_path, '[network]\nsubnet = "10.0.0.0/30"\n') == [
        "network.subnet: prefix must be between /16 and /29 (got /30)"
    ]
    assert "host bits are set" in problems_for(tmp_path, '[network]\nsubnet = "10.0.0.1/24"\n')[0]


def test_every_problem_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        """
vmm = "kvm"
surprise = true
[vm]
vcpus = 0
work_disk_size = "lots"
[network]
subnet = "10.0.0.0/8"
[daemon]
stop_vms_on_shutdown = "yes"
[[file_sync]]
host = "~/.gitconfig"
guest = "~/.gitconfig"
[[file_sync]]
host = "~/.netrc"
guest = "~/.netrc"
mode = 600
[[file_sync]]
host = "/etc/shadow"
guest = "/etc/shadow"
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path, home=HOME)
    problems = caught.value.problems
    expected_prefixes = [
        "vmm: ",
        "vm.vcpus: must be between 1 and 32",
        "vm.work_disk_size: ",
        "network.subnet: prefix must be between /16 and /29",
        "daemon.stop_vms_on_shutdown: ",
        "file_sync[1].mode: ",
        "file_sync[2].host: must be inside your home",
        "file_sync[2].guest: must be under ~/ or /root/",
        "surprise: unknown key",
    ]
    for prefix in expected_prefixes:
        assert any(p.startswith(prefix) for p in problems), (prefix, problems)
    assert len(problems) == len(expected_prefixes), problems
    assert all("\n" not in p for p in problems)
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid config (9 problems): ")
    assert caught.value.hint


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, '[vm]\nvcpus = 2\nimage = "unterminated\n')
    assert len(problems) == 1
    assert problems[0].startswith("TOML syntax error: ")
    assert "line 3" in problems[0] and "column" in problems[0]
    with pytest.raises(ConfigError, match="line 3"):
        load(tmp_path, '[vm]\nvcpus = 2\nimage = "unterminated\n')


def test_unreadable_files(tmp_path: Path) -> None:
    assert config_problems(tmp_path, home=HOME) == ["is a directory, not a file"]
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[vm]\nimage = "caf\xe9"\n')
    assert config_problems(bad, home=HOME)[0].startswith("not valid UTF-8")


def test_markdown_reference_documents_every_field() -> None:
    from pydantic import BaseModel

    from banger.config import FileSync
    from banger.config.reference import markdown_reference

    text = markdown_reference()
    for name, field in Config.model_fields.items():
        assert field.description, name
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel) and name != "file_sync":
            for sub, subfield in section.model_fields.items():
                assert subfield.description, f"{name}.{sub}"
                assert f"| `{name}.{sub}` |" in text
    for sub, subfield in FileSync.model_fields.items():
        assert subfield.description and f"| `{sub}` |" in text
    assert '| `vm.work_disk_size` | `"4G"` |' in text


def test_readme_config_reference_is_the_generated_one() -> None:
    # The README's tables are markdown_reference()'s output verbatim, so a new or
    # changed field (its bound, its default) cannot leave the README behind.
    from banger.config.reference import markdown_reference

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert markdown_reference() in readme, "regenerate README's config reference"
