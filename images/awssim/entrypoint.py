"""The simulator image's entry point: silo_awssim, then the organization.

Runs tests/awssim/silo_awssim.py (copied into the image) as a child process and, once it
answers, creates the organization with every feature, as the test environment does after a
reset: Silo needs an organization to work in. SIGTERM and SIGINT are passed on to the child;
the image exits with the child's exit code.

    entrypoint.py [--host 0.0.0.0] [--port 5000] [--verbose] [--no-organization]

--no-organization leaves the organization to the caller (Silo's test environment resets the
simulator and creates it itself: two creators would race).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request

import boto3

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--no-organization", action="store_true", help="do not create the organization")
    args = parser.parse_args()

    command = [sys.executable, os.path.join(HERE, "silo_awssim.py"), "--host", args.host, "--port", str(args.port)]
    if args.verbose:
        command.append("--verbose")
    child = subprocess.Popen(command)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: child.send_signal(signum))

    local = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    endpoint = f"http://{local}:{args.port}"
    deadline = time.monotonic() + 60
    while True:
        if child.poll() is not None:
            return child.returncode
        try:
            with urllib.request.urlopen(f"{endpoint}/_silo/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            print("silo-awssim did not answer within 60 s", file=sys.stderr, flush=True)
            child.terminate()
            return 1
        time.sleep(0.2)
    if args.no_organization:
        print(f"silo-awssim: serving {endpoint}", flush=True)
        return child.wait()

    organizations = boto3.client(
        "organizations",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    try:
        organizations.create_organization(FeatureSet="ALL")
        print(f"silo-awssim: organization created; serving {endpoint}", flush=True)
    except organizations.exceptions.AlreadyInOrganizationException:
        # Someone (a test's reset) was faster: the organization exists, which is all we want.
        print(f"silo-awssim: the organization exists; serving {endpoint}", flush=True)
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
