"""The HCL reader: what spiffe-helper's config files contain, with line numbers on errors."""

from __future__ import annotations

import pytest

from spiffe_bridge.sidecar.hcl import HclError, HclObject, loads


def test_spiffe_helper_readme_example_parses() -> None:
    obj = loads(
        """
        agent_address = "/tmp/spire-agent/public/api.sock"
        cmd = "ghostunnel"
        cmd_args = "server --listen localhost:8002 --allow-uri-san spiffe://example.org/Database"
        cert_dir = "certs"
        renew_signal = "SIGUSR1"
        svid_file_name = "svid.pem"
        jwt_svids = [{jwt_audience="your-audience",jwt_extra_audiences=["a", "b"],
                      jwt_svid_file_name="jwt_svid.token"}]
        cert_file_mode = 0444
        """
    )
    assert obj["cmd"] == "ghostunnel"
    assert obj["cert_file_mode"] == 0o444
    assert obj["jwt_svids"] == [
        {
            "jwt_audience": "your-audience",
            "jwt_extra_audiences": ["a", "b"],
            "jwt_svid_file_name": "jwt_svid.token",
        }
    ]
    assert obj.line_of("agent_address") == 2
    assert obj.line_of("cert_file_mode") == 10


def test_numbers_follow_go_base_detection() -> None:
    obj = loads("a = 0644\nb = 420\nc = 644\nd = 0x1F\ne = 0o755\nf = -3\ng = 1.5\nh = 0")
    assert (obj["a"], obj["b"], obj["c"], obj["d"], obj["e"], obj["f"], obj["g"], obj["h"]) == (
        0o644, 420, 644, 31, 0o755, -3, 1.5, 0,
    )  # fmt: skip


def test_comments_blocks_and_trailing_commas() -> None:
    obj = loads(
        """
        # hash comment
        // slash comment
        /* block
           comment */
        health_checks {
          listener_enabled = true   # trailing
          bind_port = 8081,
          liveness_path = "/live"
        }
        list = ["a", "b",]
        flag = false
        """
    )
    hc = obj["health_checks"]
    assert isinstance(hc, HclObject)
    assert hc == {"listener_enabled": True, "bind_port": 8081, "liveness_path": "/live"}
    assert hc.line_of("bind_port") == 8
    assert obj["list"] == ["a", "b"]
    assert obj["flag"] is False


def test_repeated_blocks_become_a_list_like_hcl_v1() -> None:
    obj = loads(
        'jwt_svids { jwt_audience = "a" }\njwt_svids { jwt_audience = "b" }\njwt_svids { jwt_audience = "c" }'
    )
    assert [o["jwt_audience"] for o in obj["jwt_svids"]] == ["a", "b", "c"]


def test_string_escapes() -> None:
    obj = loads(r'a = "q\"uote\\ tab\t nl\n \u00e9"')
    assert obj["a"] == 'q"uote\\ tab\t nl\n é'


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ('a = "x"\nb = ', 2, "expected a value"),
        ('a = "x"\n\nb "y"', 3, "expected '=' or '{'"),
        ('a = "x"\na = "y"', 2, "set twice (first on line 1)"),
        ("a = [1, 2", 1, "missing ']'"),
        ("a {\n b = 1\n", 3, "missing '}'"),
        ('a = "unterminated\n', 1, "unterminated string"),
        ("a = 09", 1, "invalid octal"),
        ("a = <<EOF\nx\nEOF", 1, "heredoc"),
        ("\n\na = @", 3, "unexpected character"),
        (r'a = "\q"', 1, "unknown escape"),
    ],
)
def test_errors_name_the_line(text: str, line: int, fragment: str) -> None:
    with pytest.raises(HclError) as info:
        loads(text)
    assert info.value.line == line
    assert fragment in str(info.value)
    assert str(info.value).startswith(f"line {line}:")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a = 9223372036854775808", "out of range"),  # int64 max + 1 (Go's ParseInt(.., 0, 64) refuses it)
        ("a = -9223372036854775809", "out of range"),
        ("a = 0x10000000000000000", "out of range"),
        ("a = " + "9" * 5000, "out of range"),  # Python refuses to convert it at all (4300-digit limit)
        ("a = 1e400", "out of range"),  # would be inf
    ],
)
def test_numbers_are_bounded_like_go(text: str, reason: str) -> None:
    with pytest.raises(HclError, match=reason) as info:
        loads("\n" + text)
    assert info.value.line == 2


def test_int64_edges_parse() -> None:
    assert loads("a = -9223372036854775808\nb = 0x7fffffffffffffff") == {"a": -(2**63), "b": 2**63 - 1}


def test_nesting_is_bounded_and_names_the_line() -> None:
    from spiffe_bridge.sidecar.hcl import MAX_NESTING

    value = loads("a = " + "[" * MAX_NESTING + "]" * MAX_NESTING)["a"]
    for _ in range(MAX_NESTING - 1):
        value = value[0]
    assert value == []
    for deep in ("a = " + "[" * 5000 + "]" * 5000, "x {\n" * 5000 + "}" * 5000, "a = " + "{b = " * 5000):
        with pytest.raises(HclError, match="nested more than") as info:
            loads(deep)
        assert info.value.line in (1, MAX_NESTING + 1)


def test_check_nesting_skips_strings_and_comments() -> None:
    from spiffe_bridge.sidecar.hcl import check_nesting

    check_nesting('{"a": "' + "[" * 100 + '", "b": \'[[[\' } # ' + "{" * 100)
    check_nesting('x = """\n' + "[" * 100 + '\n"""\n')
    with pytest.raises(HclError, match="nested more than") as info:
        check_nesting('{\n"a":\n' + "[" * 40)
    assert info.value.line == 3
