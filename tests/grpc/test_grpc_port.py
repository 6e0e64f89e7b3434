"""``--grpc-port`` / ``MODELAPI_GRPC_PORT``: off by default, reserved before any fork, a taken port refused."""

from __future__ import annotations

import socket

import pytest

from modelapi.cli import build_parser
from modelapi.server import reserve_grpc
from modelapi.settings import Settings


def test_off_unless_set_and_read_from_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().grpc_port is None
    monkeypatch.setenv("MODELAPI_GRPC_PORT", "8001")
    assert Settings().grpc_port == 8001
    args = build_parser().parse_args(["serve", "--grpc-port", "9001"])
    assert args.grpc_port == 9001


def test_the_reservation_resolves_port_0_and_lets_another_reuseport_socket_listen() -> None:
    reservation = reserve_grpc("127.0.0.1", 0)
    try:
        port = reservation.getsockname()[1]
        assert port > 0
        worker = socket.socket()
        worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        worker.bind(("127.0.0.1", port))  # what each worker's gRPC server does
        worker.listen()
        worker.close()
    finally:
        reservation.close()


def test_a_port_another_program_listens_on_is_refused() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(OSError, match=f"grpc_port: cannot bind 127.0.0.1:{port}"):
            reserve_grpc("127.0.0.1", port)


def test_the_grpc_port_must_be_its_own() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="grpc_port: 8000 is also the port"):
        Settings(port=8000, grpc_port=8000)
    with pytest.raises(ValidationError, match="grpc_port: 9100 is also the metrics_port"):
        Settings(metrics_port=9100, grpc_port=9100)
    assert Settings(port=0, grpc_port=0).grpc_port == 0  # both picked free, and so different
