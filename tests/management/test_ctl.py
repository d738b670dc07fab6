"""``clusterfunk ctl`` against a real management server (loopback) over a fake node."""

from __future__ import annotations

import json
import socket

import pytest
import trio

from clusterfunk.cli import main
from clusterfunk.cli.ctl import COMMANDS, DETAILS
from clusterfunk.management.api import ManagementError
from tests.management.conftest import TOKEN


async def ctl(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``clusterfunk ctl ARGV`` in a thread (it is a blocking HTTP client)."""
    capsys.readouterr()
    code = await trio.to_thread.run_sync(main, ["ctl", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv("CLUSTERFUNK_NODE", raising=False)
    monkeypatch.delenv("CLUSTERFUNK_TOKEN", raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich: wide enough for whole tag lists


@pytest.mark.parametrize(
    ("argv", "method", "args"),
    [(["status"], "status", ()), (["nodes"], "nodes", ()), (["members"], "members", ()),
     (["endpoints"], "endpoints", ()), (["endpoints", "--name", "web"], "endpoints", ("web",)),
     (["shards"], "shards", ()), (["raft"], "raft_info", ()), (["diag"], "diag", ())],
)
async def test_every_read_command_json_is_the_node_view(capsys, server, fake, argv, method,
                                                         args):
    code, out, err = await ctl(capsys, "--node", server.address, *argv, "--json")
    assert (code, err) == (0, "")
    assert json.loads(out) == json.loads(json.dumps(getattr(fake, method)(*args)))


async def test_status_json_has_the_fields_scripts_rely_on(capsys, server):
    code, out, _ = await ctl(capsys, "--node", server.address, "status", "--json")
    st = json.loads(out)
    for key in ("node", "state", "role", "leader", "term", "commit_index", "map_index"):
        assert key in st
    assert st["nodes"] == ["a", "b", "c"]
    code, out, _ = await ctl(capsys, "--json", "--node", server.address, "nodes")  # flags first
    assert code == 0
    nodes = json.loads(out)
    assert [(n["node"], n["worker_id"], n["shards"], n["weight"]) for n in nodes] == \
        [("a", 0, 34, 34.0), ("b", 1, 33, 33.0), ("c", 2, 33, 33.0)]


@pytest.mark.parametrize(
    ("argv", "expect"),
    [
        (["status"], ["node a", "operational", "leader", "3: a, b, c", "12.5 s"]),
        (["nodes"], ["3 nodes in the committed map", "34.00%", "33.00%"]),
        (["members"], ["4 gossip members", "suspect", "dead", "1.20", "ep.web=127.0.0.1:82"]),
        (["endpoints", "--name", "web"], ["2 endpoints", "127.0.0.1:82"]),
        (["shards"], ["100 shards, total weight 100, map index 40", "34.00%"]),
        (["raft"], ["node a: leader, term 7", "voter (leader)", "nonvoter", "replicate"]),
        (["diag"], ["1 problem(s)", "Raft member c is suspect", "33 shards moved",
                    "why: added c"]),
    ],
)
async def test_every_read_command_prints_a_table(capsys, server, argv, expect):
    code, out, err = await ctl(capsys, "--node", server.address, *argv)
    assert (code, err) == (0, "")
    for text in expect:
        assert text in out, (text, out)


async def test_write_commands_with_the_token(capsys, server, fake, monkeypatch):
    code, out, err = await ctl(capsys, "--node", server.address, "--token", TOKEN, "voters", "5")
    assert (code, out, err) == (0, "target voters set to 5 (by leader a)\n", "")
    monkeypatch.setenv("CLUSTERFUNK_TOKEN", TOKEN)
    code, out, _ = await ctl(capsys, "--node", server.address, "remove", "c")
    assert (code, out) == (0, "removed c (by leader a)\n")
    code, out, _ = await ctl(capsys, "--node", server.address, "step-down", "--json")
    assert code == 0 and json.loads(out) == {"ok": True, "node": "a", "leader": "b"}
    fake.leader = "a"  # a leads again (else the write is forwarded to b)
    code, out, _ = await ctl(capsys, "--node", server.address, "step-down")
    assert out == "a stepped down; leader now b\n"
    assert fake.calls == [("set_voters", 5), ("remove_node", "c"), ("step_down", None),
                          ("step_down", None)]


async def test_an_error_answer_is_one_line_and_exit_1(capsys, server, fake):
    code, out, err = await ctl(capsys, "--node", server.address, "step-down")
    assert code == 1 and out == ""
    assert err == (f"clusterfunk ctl: error: {server.address} answered 401: writes need "
                   "authentication (Authorization: Bearer TOKEN)\n")
    fake.fail_with = ManagementError(409, "no other voter")
    code, _, err = await ctl(capsys, "--node", server.address, "--token", TOKEN, "step-down")
    assert code == 1 and err.endswith("answered 409: no other voter\n")
    assert err.count("\n") == 1
    assert fake.calls == []


async def test_no_node_answers_is_one_line_and_exit_2(capsys, monkeypatch):
    port = _unused_port()
    code, out, err = await ctl(capsys, "--node", f"127.0.0.1:{port}", "status")
    assert code == 2 and out == ""
    assert err.startswith(f"clusterfunk ctl: error: no node answers at 127.0.0.1:{port} (")
    assert err.count("\n") == 1
    monkeypatch.setenv("CLUSTERFUNK_NODE", f"127.0.0.1:{port}")
    code, _, err = await ctl(capsys, "nodes", "--json")
    assert code == 2 and f"127.0.0.1:{port}" in err


async def test_the_node_comes_from_the_environment(capsys, server, monkeypatch):
    monkeypatch.setenv("CLUSTERFUNK_NODE", server.address)
    code, out, _ = await ctl(capsys, "status", "--json")
    assert code == 0 and json.loads(out)["node"] == "a"


def test_help_lists_every_command_and_each_has_its_own(capsys):
    with pytest.raises(SystemExit) as e:
        main(["ctl", "--help"])
    assert e.value.code == 0
    top = capsys.readouterr().out
    for name, (doc, _m, _p) in COMMANDS.items():
        assert name in top
        with pytest.raises(SystemExit) as e:
            main(["ctl", name, "--help"])
        assert e.value.code == 0
        sub = capsys.readouterr().out
        assert doc.split()[0].lower() in sub.lower() and "--json" in sub and "--node" in sub
    with pytest.raises(SystemExit) as e:
        main(["ctl", "voters", "many"])
    assert e.value.code == 2


def test_each_command_help_says_what_it_shows_or_does(capsys):
    """--help of every command has its details; writes say they need the token and are
    forwarded; the top-level help has examples and the exit statuses."""
    main_help = _help(capsys, [])
    assert "examples:" in main_help and "Exit status: 0" in " ".join(main_help.split())
    for name in COMMANDS:
        text = " ".join(_help(capsys, [name]).split())
        assert DETAILS[name] in text, name
    for name in ("step-down", "remove", "voters"):
        text = " ".join(_help(capsys, [name]).split())
        assert "forwarded to the leader" in text and "token" in text
    assert "stored in the Raft log" in " ".join(_help(capsys, ["voters"]).split())
    assert "--name NAME" in _help(capsys, ["endpoints"])


def _help(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["ctl", *argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


async def test_tls_dir_talks_https_with_a_client_certificate(capsys, fake, tmp_path):
    import ssl

    import trustme

    from clusterfunk.management.server import open_management_server

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    client = ca.issue_cert("client")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client-key.pem"))
    async with open_management_server(fake, "127.0.0.1:0", token=None,
                                      ssl_context=server_ctx) as s:
        code, out, err = await ctl(capsys, "--node", s.address, "--tls-dir", str(tmp_path),
                                   "voters", "4")
        assert (code, err) == (0, "") and "target voters set to 4" in out
        # without the client certificate: no answer over plain HTTP or bare TLS
        code, _, err = await ctl(capsys, "--node", s.address, "status")
        assert code == 2 and err.count("\n") == 1
    assert fake.calls == [("set_voters", 4)]
    (tmp_path / "client-key.pem").unlink()
    code, _, err = await ctl(capsys, "--node", "127.0.0.1:1", "--tls-dir", str(tmp_path),
                             "status")
    assert code == 2 and "client-key.pem does not exist" in err


async def test_ctl_and_forwarding_with_the_projects_own_certificates(capsys, tmp_path):
    """`clusterfunk certs` files: ctl --tls-dir talks to a follower's HTTPS server,
    which forwards the write to the leader over HTTPS with its node certificate."""
    from clusterfunk.management.server import open_management_server
    from clusterfunk.runtime.tls import load_tls_dir
    from clusterfunk.security.certs import write_certs
    from tests.management.fake import FakeNode

    write_certs(tmp_path, ["a", "b"])
    tls_a, tls_b = load_tls_dir(tmp_path, "a"), load_tls_dir(tmp_path, "b")
    leader, follower = FakeNode("a", leader="a"), FakeNode("b", leader="a")
    async with open_management_server(leader, "127.0.0.1:0", token=None,
                                      ssl_context=tls_a.server_context) as sa, \
            open_management_server(follower, "127.0.0.1:0", token=None,
                                   ssl_context=tls_b.server_context,
                                   forward_ssl_context=tls_b.client_context) as sb:
        follower.management = {"a": sa.address}
        code, out, err = await ctl(capsys, "--node", sb.address, "--tls-dir", str(tmp_path),
                                   "voters", "2")
        assert (code, err) == (0, ""), err
        assert out == "target voters set to 2 (by leader a)\n"
        code, out, _ = await ctl(capsys, "--node", sb.address, "--tls-dir", str(tmp_path),
                                 "status", "--json")
        assert code == 0 and json.loads(out)["node"] == "b"
    assert leader.calls == [("set_voters", 2)] and follower.calls == []
