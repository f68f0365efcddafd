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
    deadline = time.monotonic() + 0.2
    try:
        receive(sock, deadline)
        raise SystemExit("receive with nothing to read did not time out")
    except TimeoutError:
        early = deadline - time.monotonic()
    # Not before its deadline (a loop's cached time may start a timer a little early); how late is load's.
    assert early < 0.05, early
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
    while the first still waits for one that never comes (it is only let go afterwards, by its peer)."""
    script = textwrap.dedent(
        """
        from gevent import monkey; monkey.patch_all()
        import socket, time, gevent
        from lossbench.loadgen.wire import connect, receive
        listener = socket.socket(); listener.bind(("127.0.0.1", 0)); listener.listen(8)
        address = listener.getsockname()
        silent = connect(address, 2.0); held, _ = listener.accept()  # kept open, never written
        talker = connect(address, 2.0); peer, _ = listener.accept()
        waiting = gevent.spawn(receive, silent, time.monotonic() + 30)
        gevent.sleep(0.05)  # the waiting greenlet runs and waits on its socket: a blocking wait holds us 30 s
        assert not waiting.ready(), "the silent socket's wait blocked the process until its deadline"
        peer.sendall(b"hello")
        assert receive(talker, time.monotonic() + 30)[0] == b"hello"
        assert not waiting.ready()
        held.close()  # EOF: the silent socket's wait ends
        waiting.join(30)
        assert waiting.value == (b"", []), waiting.exception
        print("ok")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_threads_wait_without_holding_each_other():
    """In threads (the tests' client), a thread waiting on one socket does not delay another: the other
    gets its answer while the first still waits (it is only let go afterwards, by its peer)."""
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    try:
        silent = connect(("127.0.0.1", port), 2.0)
        held, _ = listener.accept()  # kept open, never written
        outcome: list[bytes | OSError] = []

        def wait_silent() -> None:
            try:
                outcome.append(receive(silent, time.monotonic() + 30)[0])
            except OSError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=wait_silent)
        thread.start()
        talker = connect(("127.0.0.1", port), 2.0)
        peer, _ = listener.accept()
        send_all(peer, b"hi")
        assert receive(talker, time.monotonic() + 30)[0] == b"hi"
        assert thread.is_alive() and not outcome, "the talker's answer waited for the silent socket"
        held.close()  # EOF: the silent socket's wait ends
        thread.join(30)
        assert outcome == [b""]
        for sock in (silent, held, talker, peer):
            sock.close()
    finally:
        listener.close()
