"""`verdict audit verify` and `verdict audit replay` on a log of real decisions."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace
from pathlib import Path

from tests.cases import lending_cases
from tests.conftest import POLICIES
from tests.integration.test_cli import verdict
from verdict.app import entity_files
from verdict.audit.chain import Chainer
from verdict.audit.record import CallInfo, decision_record
from verdict.engine.authorizer import Authorizer
from verdict.policy.holder import PolicyHolder
from verdict.policy.loader import load_policy_stores
from verdict.store.memory import MemoryEntityStore

CALL = CallInfo("req-1", "loan-api", "IsAuthorized")


async def recorded_lines() -> list[str]:
    """One chained record per lending decision case, answered by the engine; the context keeps
    the attributes the lending store lets the audit log record (mfa, now). Disbursements send
    source_ip, which is recorded by name only; other cases do not send it."""
    snapshot = load_policy_stores(POLICIES)
    authorizer = Authorizer(
        PolicyHolder(snapshot), MemoryEntityStore.from_files(entity_files(snapshot))
    )
    audit_context = snapshot.stores["lending"].settings.audit_context
    chainer = Chainer("test")
    lines = []
    for case in lending_cases():
        request = case.request
        if request.action.id != "disburse":
            context = {k: v for k, v in request.context.items() if k != "source_ip"}
            request = replace(request, context=context)
        result = await authorizer.authorize(request)
        lines.append(chainer.chain(decision_record(CALL, request, result, 0.001, audit_context)))
    return lines


def write_log(folder: Path, lines: list[str]) -> Path:
    """``lines`` as audit.jsonl in ``folder``."""
    path = folder / "audit.jsonl"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def test_verify_passes_an_intact_log_and_names_the_altered_record(tmp_path: Path) -> None:
    """An intact log exits 0; flipping one recorded DENY to ALLOW exits 1 naming the next
    line, where the chain breaks."""
    lines = asyncio.run(recorded_lines())
    intact = verdict("audit", "verify", str(write_log(tmp_path, lines)))
    assert intact.returncode == 0, intact.stdout
    assert f"{len(lines)} records, intact" in intact.stdout
    index = next(i for i, line in enumerate(lines[:-1]) if '"decision":"DENY"' in line)
    lines[index] = lines[index].replace('"decision":"DENY"', '"decision":"ALLOW"')
    broken = verdict("audit", "verify", str(write_log(tmp_path, lines)))
    assert broken.returncode == 1
    assert f"audit.jsonl:{index + 2}: segment test: prev does not match" in broken.stdout


def test_replay_lists_changes_grouped_by_policy(tmp_path: Path) -> None:
    """Against stores with a forbid-all added, every recorded ALLOW changes to DENY under
    'freeze'; records whose request sent source_ip (not recorded) are not replayed."""
    lines = asyncio.run(recorded_lines())
    candidate = tmp_path / "candidate"
    shutil.copytree(POLICIES / "lending", candidate / "lending")
    (candidate / "lending" / "freeze.cedar").write_text(
        '@id("freeze")\nforbid (principal, action, resource);\n'
    )
    result = verdict("audit", "replay", str(write_log(tmp_path, lines)), "--stores", str(candidate))
    assert result.returncode == 1, result.stderr
    records = [json.loads(line) for line in lines]
    replayable = [r for r in records if "source_ip" not in r["context_keys"]]
    allowed = [r for r in replayable if r["decision"] == "ALLOW"]
    assert f"freeze: {len(allowed)} decision(s) change" in result.stdout
    skipped = len(records) - len(replayable)
    assert f"not replayed (context not recorded: source_ip): {skipped}" in result.stdout
    same = verdict("audit", "replay", str(write_log(tmp_path, lines)), "--stores", str(POLICIES))
    assert same.returncode == 0, same.stdout
    assert f"{len(replayable)} replayed, 0 would change" in same.stdout
