"""cluster-node configuration (TOML file, CLUSTERFUNK_* environment, flags) and logging."""

from __future__ import annotations

import io
import json
import logging
import tomllib

import pytest

from clusterfunk.cli import build_parser, main
from clusterfunk.cli.cluster_node import (
    OPTIONS,
    ConfigError,
    format_config,
    resolve,
    setup_logging,
)


def _args(*argv: str):
    # these tests are about configuration sources, not TLS: run without it explicitly
    tls = [] if "--tls-dir" in argv else ["--insecure"]
    return build_parser().parse_args(["cluster-node", *argv, *tls])


def _write(tmp_path, text: str) -> str:
    p = tmp_path / "node.toml"
    p.write_text(text)
    return str(p)


def test_defaults_match_the_documented_ones():
    cfg, source = resolve(_args("--id", "a", "--in-memory"), {})
    assert cfg["management_port"] == 8500
    assert (cfg["gossip_port"], cfg["raft_port"], cfg["coord_port"]) == (7946, 8300, 8400)
    assert cfg["log_format"] == "human" and cfg["log_level"] == "info"
    assert source["id"] == "flag" and source["management_port"] == "default"


def test_flags_beat_environment_beat_file(tmp_path):
    path = _write(tmp_path, """
id = "from-file"
in_memory = true
voters = 5
shards = 64
management_port = 9000
join = ["10.0.0.1:7946"]
[endpoint]
web = "127.0.0.1:80"
""")
    env = {"CLUSTERFUNK_VOTERS": "7", "CLUSTERFUNK_SHARDS": "128",
           "CLUSTERFUNK_JOIN": "127.0.0.1:1, 127.0.0.1:2", "CLUSTERFUNK_TOKEN": "t0k"}
    cfg, source = resolve(_args("--config", path, "--shards", "256"), env)
    assert cfg["id"] == "from-file" and source["id"] == "file"
    assert cfg["management_port"] == 9000 and source["management_port"] == "file"
    assert cfg["voters"] == 7 and source["voters"] == "env"
    assert cfg["shards"] == 256 and source["shards"] == "flag"
    assert cfg["join"] == ["127.0.0.1:1", "127.0.0.1:2"]
    assert cfg["endpoint"] == {"web": "127.0.0.1:80"}
    assert cfg["management_token"] == "t0k" and source["management_token"] == "env"
    cfg, _ = resolve(_args("--config", path, "--endpoint", "api=h:1", "--endpoint", "x=h:2"),
                     {"CLUSTERFUNK_ENDPOINT": "web=h:3"})
    assert cfg["endpoint"] == {"api": "h:1", "x": "h:2"}


def test_in_memory_is_an_explicit_choice():
    cfg, source = resolve(_args("--id", "a"), {"CLUSTERFUNK_IN_MEMORY": "yes"})
    assert cfg["in_memory"] is True and source["in_memory"] == "env"
    cfg, _ = resolve(_args("--id", "a", "--data-dir", "/tmp/x"), {})
    assert (cfg["data_dir"], cfg["in_memory"]) == ("/tmp/x", False)


def test_a_member_without_data_dir_is_refused(capsys):
    assert main(["cluster-node", "--id", "a"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clusterfunk cluster-node: error: a member node needs --data-dir")
    assert err.count("\n") == 1


def test_the_config_file_can_come_from_the_environment(tmp_path):
    path = _write(tmp_path, 'id = "n7"\nin_memory = true\n')
    cfg, _ = resolve(_args(), {"CLUSTERFUNK_CONFIG": path})
    assert cfg["id"] == "n7"


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ('id = "a"\nvotrs = 3\n', {}, "unknown key 'votrs'"),
        ('id = "a"\nvoters = "three"\n', {}, "voters must be an integer"),
        ('id = "a"\njoin = "h:1"\n', {}, "join must be a list of strings"),
        ('id = "a"\nlog_format = "xml"\n', {}, "log_format must be one of human, json"),
        ("id = \n", {}, "not valid TOML"),
        ('id = "a"\n', {"CLUSTERFUNK_RAFT_PORT": "x"}, "$CLUSTERFUNK_RAFT_PORT must be an integer"),
        ('id = "a"\n', {"CLUSTERFUNK_ENDPOINT": "web"}, "takes NAME=HOST:PORT"),
        ('id = "a"\nin_memory = true\nmanagement_port = 70000\n', {},
         "management_port must be 0..65535"),
        ('id = "a"\nin_memory = "yes"\n', {}, "in_memory must be true or false"),
        ('id = "a"\nin_memory = true\ndns_server = "dns.example:53"\n', {},
         "dns_server must be an IP address and port"),
        ('id = "a"\nin_memory = true\ndns_server = "10.0.0.1"\n', {},
         "dns_server: not a host:port address"),
        ('id = "a"\n', {"CLUSTERFUNK_IN_MEMORY": "maybe"}, "must be true or false"),
        ('id = "a"\n', {}, "a member node needs --data-dir"),
        ('id = "a"\ndata_dir = "/tmp/x"\n', {"CLUSTERFUNK_IN_MEMORY": "1"},
         "--data-dir and --in-memory exclude each other"),
        ("shards = 3\n", {}, "the node id is required"),
    ],
)
def test_bad_configuration_is_one_clear_error(tmp_path, text, env, message):
    with pytest.raises(ConfigError, match=None) as e:
        resolve(_args("--config", _write(tmp_path, text)), env)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_configuration_exits_2_with_one_line(tmp_path, capsys):
    assert main(["cluster-node", "--config", str(tmp_path / "missing.toml")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("clusterfunk cluster-node: error: config file ")
    assert err.count("\n") == 1


def test_print_config_round_trips_and_hides_the_token(tmp_path, capsys, monkeypatch):
    path = _write(tmp_path, 'id = "a"\nin_memory = true\ninsecure = true\n'
                  'join = ["127.0.0.1:7946"]\n[endpoint]\nweb = "h:80"\n')
    monkeypatch.setenv("CLUSTERFUNK_TOKEN", "very-secret")
    monkeypatch.setenv("CLUSTERFUNK_VOTERS", "5")
    assert main(["cluster-node", "--config", path, "--management-port", "0",
                 "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "very-secret" not in text
    assert 'management_token = "<set>"  # env; not printed' in text
    assert "voters = 5  # env" in text and "management_port = 0  # flag" in text
    printed = tomllib.loads(text)
    monkeypatch.delenv("CLUSTERFUNK_TOKEN")
    monkeypatch.delenv("CLUSTERFUNK_VOTERS")
    again, _ = resolve(_args("--config", _write(tmp_path, text)), {})
    first, _ = resolve(_args("--config", path, "--management-port", "0"),
                       {"CLUSTERFUNK_TOKEN": "very-secret", "CLUSTERFUNK_VOTERS": "5"})
    for o in OPTIONS:
        if o.secret:
            assert printed[o.name] == "<set>"
            continue
        assert again[o.name] == first[o.name], o.name


def test_format_config_comments_unset_values():
    cfg, source = resolve(_args("--id", "a", "--in-memory"), {})
    text = format_config(cfg, source)
    assert "# data_dir = (unset)  # default" in text
    assert tomllib.loads(text)["id"] == "a"


def test_json_logging_is_one_object_a_line():
    buf = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("json", "info", stream=buf)
        logging.getLogger("clusterfunk.node").info("state %s", "operational")
        logging.getLogger("clusterfunk.node").debug("hidden at info")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("clusterfunk.x").exception("failed")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [(r["level"], r["logger"], r["msg"]) for r in lines] == [
        ("info", "clusterfunk.node", "state operational"), ("error", "clusterfunk.x", "failed")]
    assert "ValueError: boom" in lines[1]["exc"]
    assert isinstance(lines[0]["t"], float)


def test_human_logging():
    buf = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging("human", "warning", stream=buf)
        logging.getLogger("clusterfunk.node").info("not shown")
        logging.getLogger("clusterfunk.node").warning("writes disabled")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    assert buf.getvalue().count("\n") == 1
    assert "WARNING clusterfunk.node: writes disabled" in buf.getvalue()
