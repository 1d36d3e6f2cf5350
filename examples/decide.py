"""Ask a running Verdict (e.g. `make run`) for a few lending decisions and print them."""

from __future__ import annotations

import argparse

from verdict.client import ALLOW, VerdictClient, build_request

CONTEXT = {"mfa": True, "now": "2025-03-04T10:00:00Z", "source_ip": "10.20.0.5"}
QUESTIONS = [
    ("Employee::olivia", "Action::disburse", "Loan::loan-1005"),  # loan officer, approved loan
    ("Employee::uma", "Action::view", "Loan::loan-2001"),  # another partner's loan
    ("Borrower::alice", "Action::view", "Loan::loan-1001"),  # her own loan
]


def main() -> None:
    """One IsAuthorized call, then the same questions as one BatchAuthorize."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="127.0.0.1:50051", help="HOST:PORT of Verdict")
    target = parser.parse_args().target
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
    main()
