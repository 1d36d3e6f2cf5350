"""Ask a running Verdict (e.g. `make run`) for a few lending decisions and print them."""

from __future__ import annotations

import argparse
import sys

import grpc

from verdict.client import ALLOW, VerdictClient, build_request

CONTEXT = {"mfa": True, "now": "2025-03-04T10:00:00Z", "source_ip": "10.20.0.5"}
QUESTIONS = [
    ("Employee::olivia", "Action::disburse", "Loan::loan-1005"),  # loan officer, approved loan
    ("Employee::uma", "Action::view", "Loan::loan-2001"),  # another partner's loan
    ("Borrower::alice", "Action::view", "Loan::loan-1001"),  # her own loan
]


def main() -> int:
    """Exit 0 once every answer is printed, 2 when the server cannot be asked."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "target", nargs="?", default="127.0.0.1:50051", help="HOST:PORT of Verdict (%(default)s)"
    )
    parser.add_argument("--target", dest="target_flag", help="the same, as a flag")
    args = parser.parse_args()
    target = args.target_flag or args.target
    try:
        ask(target)
    except grpc.RpcError as exc:  # no traceback for the usual case: nothing serves there yet
        code = exc.code().name if isinstance(exc, grpc.Call) else "UNKNOWN"
        print(f"error: cannot ask Verdict at {target} ({code}); is `make run` up?", file=sys.stderr)
        return 2
    return 0


def ask(target: str) -> None:
    """One IsAuthorized call, then the same questions as one BatchAuthorize."""
    with VerdictClient(target) as client:
        reply = client.is_authorized(*QUESTIONS[0], context=CONTEXT)
        print(
            "single:",
            "ALLOW" if reply.decision == ALLOW else "DENY",
            list(reply.determining_policies),
            reply.policy_version,
        )
        batch = client.batch([build_request(*q, context=CONTEXT) for q in QUESTIONS])
        for question, result in zip(QUESTIONS, batch.results, strict=True):
            answer = result.response
            verdict = "ALLOW" if answer.decision == ALLOW else "DENY"
            print("batch: ", " ".join(question), "->", verdict, list(answer.determining_policies))


if __name__ == "__main__":
    sys.exit(main())
