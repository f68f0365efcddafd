"""The client's wire (``lossbench.client``): non-blocking C sockets, waited on by gevent under Locust and by
poll in threads. Both ways are run here on real loopback sockets; the gevent way in a child process, since
monkey-patching is for the whole process."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from lossbench.loadgen.wire import connect, receive, send_all
from support import ROOT, free_port

WIRE_SCRIPT = textwrap.dedent(
    """
    import errno, socket, sys, time
    {patch}
    from lossbench.loadgen.wire import connect, receive, send_all

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    address = listener.getsockname()

    # A refused connection is an OSError naming the address, not a hang.
    closed = socket.socket(); closed.bind(("127.0.0.1", 0)); refused_at = closed.getsockname(); closed.close()
    try:
        connect(refused_at, 2.0)
        raise SystemExit("connect to a closed port did not fail")
    except ConnectionRefusedError as exc:
        assert str(refused_at[1]) in str(exc), exc

    # A connection, a write larger than the send buffer (the peer reads it later), and a read that waits.
    sock = connect(address, 2.0)
    peer, _ = listener.accept()
    big = b"x" * (8 << 20)
    try:
        send_all(sock, big, 0.3)
        raise SystemExit("send_all into a full buffer did not time out")
    except TimeoutError:
        pass
    started = time.monotonic()
    try:
        receive(sock, time.monotonic() + 0.2)
        raise SystemExit("receive with nothing to read did not time out")
    except TimeoutError:
        waited = time.monotonic() - started
    assert 0.15 < waited < 2.0, waited
    peer.sendall(b"answer")
    data, _ = receive(sock, time.monotonic() + 2.0)
    assert data == b"answer", data
    print("ok")
    """
)


@pytest.mark.parametrize("mode", ["threads", "gevent"])
def test_connect_send_receive_and_their_timeouts(mode):
    patch = "from gevent import monkey; monkey.patch_all()" if mode == "gevent" else ""
    result = subprocess.run(
        [sys.executable, "-c", WIRE_SCRIPT.format(patch=patch)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_a_greenlet_waiting_on_the_wire_lets_others_run():
    """Under gevent a wait on one socket must not block the process: a second greenlet gets its answer
    while the first still waits for one that never comes."""
    script = textwrap.dedent(
        """
        from gevent import monkey; monkey.patch_all()
        import socket, time, gevent
        from lossbench.loadgen.wire import connect, receive
        listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(8)
        address = listener.getsockname()
        silent = connect(address, 2.0); held, _ = listener.accept()  # kept open, never written
        talker = connect(address, 2.0); peer, _ = listener.accept()
        started = time.monotonic()
        waiting = gevent.spawn(receive, silent, time.monotonic() + 1.5)
        gevent.sleep(0.05)  # the waiting greenlet runs and blocks on its socket
        peer.sendall(b"hello")
        assert receive(talker, time.monotonic() + 1.0)[0] == b"hello"
        assert time.monotonic() - started < 0.5
        waiting.join()
        assert isinstance(waiting.exception, TimeoutError), waiting.exception
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_threads_wait_without_holding_each_other():
    """In threads (the tests' client), a thread waiting on one socket does not delay another."""
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    try:
        silent = connect(("127.0.0.1", port), 2.0)
        held, _ = listener.accept()  # kept open, never written
        outcome: list[BaseException | None] = []

        def wait_silent() -> None:
            try:
                receive(silent, time.monotonic() + 1.0)
                outcome.append(None)
            except TimeoutError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=wait_silent)
        thread.start()
        talker = connect(("127.0.0.1", port), 2.0)
        peer, _ = listener.accept()
        send_all(peer, b"hi")
        started = time.monotonic()
        assert receive(talker, time.monotonic() + 1.0)[0] == b"hi"
        assert time.monotonic() - started < 0.5
        thread.join(5)
        assert isinstance(outcome[0], TimeoutError)
        for sock in (silent, held, talker, peer):
            sock.close()
    finally:
        listener.close()
