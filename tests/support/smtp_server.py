#!/usr/bin/env python3
"""A real SMTP server for the tests (aiosmtpd): STARTTLS required, AUTH PLAIN/LOGIN required
(over TLS only), messages delivered to a Maildir. Prints "ready <port>" once it answers.

usage: smtp_server.py --port P --maildir DIR --cert CERT --key KEY --user U --password PW
"""
import argparse
import signal
import ssl
import sys
import threading
import logging
logging.basicConfig(level=logging.DEBUG if "SMTP_DEBUG" in __import__("os").environ else logging.WARNING)

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--maildir", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    a = ap.parse_args()

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(a.cert, a.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == a.user
            and auth_data.password.decode() == a.password
        )
        return AuthResult(success=ok, handled=False)

    class RejectingMailbox(Mailbox):
        """Delivers, except to recipients at reject.invalid (550, a permanent refusal)."""

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if address.endswith("@reject.invalid"):
                return "550 5.1.1 mailbox unavailable"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    controller = Controller(
        RejectingMailbox(a.maildir),
        hostname="127.0.0.1",
        port=a.port,
        server_hostname="localhost",
        tls_context=ctx,
        require_starttls=True,
        authenticator=authenticator,
        auth_required=True,
        auth_require_tls=True,
    )
    controller.start()
    print(f"ready {a.port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    controller.stop()


if __name__ == "__main__":
    sys.exit(main())
