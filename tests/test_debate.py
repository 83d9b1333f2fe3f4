"""`llmst debate`: prompts render as documented, seeded assignment, records, rejects, cache, kill -9 resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from conftest import read_lines, write_jsonl

from llmst.debate.config import DebateConfig
from llmst.debate.protocol import assign, load_prompts, speakers, turn_variables
from llmst.debate.run import debate_signature, run_debate
from llmst.errors import ConfigError
from llmst.stage import is_current

LLMST = [sys.executable, "-m", "llmst"]


def test_shipped_prompts_render_every_turn_with_the_transcript():
    prompts = load_prompts("debate")
    assigned = {"A": "yes", "B": "no"}
    transcript = [{"speaker": "A", "text": "The passage says so."}]
    instruction = prompts.instruction("debate", 1)
    assert "Rebut" in instruction and prompts.instruction("debate", 9) == prompts.instruction("debate", 2)
    text = prompts.render(
        turn_variables("debate", 1, "B", "Is it?", "Some context.", assigned, transcript, instruction)
    )
    assert text.startswith("Context: Some context.\nQuestion: Is it?\n")
    assert "Debater A defends: yes\nDebater B defends: no" in text
    assert "Debater A: The passage says so." in text  # the running transcript
    assert text.endswith(f'You are Debater B, defending "no". {instruction}\nDebater B:')
    solo = prompts.render(
        turn_variables("consultancy", 0, "Consultant", "Is it?", "", {"Consultant": "no"}, [], "Argue.")
    )
    assert "Context:" not in solo and "The consultant defends: no" in solo and solo.endswith("Consultant:")
    assert prompts.cut(' "Because."\nDebater B: I disagree') == '"Because."'


def test_assignment_is_seeded_per_row_and_speakers_alternate():
    first = [assign(f"q{i}", ["yes", "no"], 0, "debate") for i in range(200)]
    assert first == [assign(f"q{i}", ["yes", "no"], 0, "debate") for i in range(200)]
    a_yes = sum(d["A"] == "yes" for d in first)
    assert 70 < a_yes < 130 and all({d["A"], d["B"]} == {"yes", "no"} for d in first)
    assert [assign(f"q{i}", ["yes", "no"], 1, "debate") for i in range(200)] != first
    assert set(assign("q1", ["yes", "no"], 0, "consultancy")) == {"Consultant"}
    assert speakers("debate", 3) == ["A", "B", "A"] and speakers("consultancy", 2) == ["Consultant"] * 2


def test_bad_prompt_files_and_options_are_one_clear_error(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("prompt: '{{ question'\ninstructions: {debate: [a], consultancy: [b]}\n")
    with pytest.raises(ConfigError, match="bad template"):
        load_prompts(str(bad))
    bad.write_text("prompt: 'x'\ninstructions: {debate: [a]}\n")
    with pytest.raises(ConfigError, match="instructions.consultancy"):
        load_prompts(str(bad))
    with pytest.raises(ConfigError, match="unknown debate prompts"):
        load_prompts("nope")
    with pytest.raises(ConfigError, match="--protocol"):
        DebateConfig(protocol="jury")
    with pytest.raises(ConfigError, match="--turns"):
        DebateConfig(turns=0)


def _questions(n: int) -> list[dict]:
    return [
        {"id": f"q{i}", "question": f"Is {i} even?", "answers": ["yes", "no"], "passage": f"{i} is a number."}
        for i in range(n)
    ]


def test_debate_records_rejects_cache_and_signature(tmp_path, tiny_model_dir):
    rows = [
        *_questions(5),
        {"id": "bad", "question": "?", "answers": ["only"]},
        {"id": "x", "answers": ["a", "b"]},
    ]
    source = write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / "debates.jsonl"
    config = DebateConfig(
        model=tiny_model_dir,
        turns=3,
        max_tokens=8,
        context_fields="passage",
        dtype="float32",
        cache_path=str(tmp_path / "c.sqlite"),
        progress=False,
    )
    summary = run_debate(source, out, config)
    records = read_lines(out)
    rejects = read_lines(tmp_path / "debates.jsonl.rejects.jsonl")
    assert summary.questions == 5 and summary.rejected == 2 and len(records) + len(rejects) == len(rows)
    assert [r["line"] for r in rejects] == [6, 7]
    for record in records:
        assert [t["speaker"] for t in record["turns"]] == ["A", "B", "A"]
        assert {record["assigned"]["A"], record["assigned"]["B"]} == {"yes", "no"}
        assert (
            record["protocol"] == "debate"
            and record["passage"]
            and record["prompt_hash"] == summary.prompt_hash
        )
    assert summary.generated == 15 and summary.tokens > 0
    assert is_current(out, debate_signature(source, config))
    # the same job again from the cache: identical transcripts, nothing generated
    again = run_debate(source, out, replace(config, overwrite=True))
    assert again.generated == 0 and again.from_cache == 15 and read_lines(out) == records
    # other options are refused instead of being mixed into the same output
    with pytest.raises(ConfigError, match="different debate job"):
        run_debate(source, out, replace(config, turns=2))
    solo = run_debate(
        source,
        tmp_path / "solo.jsonl",
        replace(config, protocol="consultancy", turns=2),
    )
    assert solo.questions == 5
    assert all(
        [t["speaker"] for t in r["turns"]] == ["Consultant"] * 2 for r in read_lines(tmp_path / "solo.jsonl")
    )
    # chat: another job (signature, cache keys); each turn is the reply to the prompt as a user message
    from llmst.backends.hf import HFBackend

    chat = replace(config, chat=True)
    assert debate_signature(source, chat) != debate_signature(source, config)
    from llmst.stage import signature_fields

    assert "chat" not in signature_fields(config)  # outputs made before --chat existed stay current
    backend = HFBackend(tiny_model_dir, dtype="float32")
    chatted = run_debate(source, tmp_path / "chat.jsonl", chat, backend=backend)
    assert chatted.questions == 5 and chatted.generated == 15 and chatted.from_cache == 0
    first = read_lines(tmp_path / "chat.jsonl")[0]
    prompts = load_prompts("debate")
    variables = turn_variables(
        "debate",
        0,
        "A",
        first["question"],
        first["passage"],
        first["assigned"],
        [],
        prompts.instruction("debate", 0),
    )
    reply = backend.generate([prompts.render(variables)], max_tokens=8, stop=prompts.stop, chat=True)[0][0]
    assert first["turns"][0]["text"] == prompts.cut(reply)


def test_kill_9_then_resume(tmp_path, tiny_model_dir):
    rows = _questions(60)
    source = write_jsonl(tmp_path / "q.jsonl", rows)
    out = tmp_path / "debates.jsonl"
    args = [
        "debate",
        str(source),
        "-o",
        str(out),
        "--model",
        tiny_model_dir,
        "--dtype",
        "float32",
        "--max-tokens",
        "6",
        "--turns",
        "2",
        "--batch-size",
        "1",
        "-q",
        "--cache-path",
        str(tmp_path / "c.sqlite"),
    ]
    process = subprocess.Popen(LLMST + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoint = tmp_path / "debates.jsonl.progress.json"
    deadline = time.time() + 300
    while time.time() < deadline:
        if checkpoint.exists() and json.loads(checkpoint.read_text())["rows_consumed"] >= 8:
            break
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = len(read_lines(out))
    assert 0 < before < 60, "the kill should land mid-run"
    result = subprocess.run(LLMST + args, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    final = read_lines(out)
    assert [r["id"] for r in final] == [r["id"] for r in rows]  # none lost, none twice, input order
    assert summary["resumed_rows"] >= 8 and summary["questions"] == 60


def test_empty_and_repeated_turns_are_counted_and_warned(tmp_path, tiny_model_dir):
    """A model that says the same thing every turn, or nothing, is not debating (injected: the tiny model's
    generate replaced): the summary counts them over the whole output, resumed rows included, and warns."""
    import hashlib
    from itertools import count

    from llmst.backends.hf import HFBackend

    source = write_jsonl(tmp_path / "q.jsonl", _questions(4))
    backend = HFBackend(tiny_model_dir, dtype="float32")
    config = DebateConfig(model=tiny_model_dir, turns=3, cache=False, progress=False)

    def replies(make):
        backend.generate = lambda prompts, **_: [[make()] for _ in prompts]

    turns = count()  # near copies: each reply differs from the others in one number only
    replies(lambda: f"Turn {next(turns)}. The passage clearly says that the answer is yes, so I am right.")
    out = tmp_path / "d.jsonl"
    parrot = run_debate(source, out, replace(config, limit=2), backend=backend)
    assert (parrot.turns, parrot.repeated_turns, parrot.empty_turns) == (6, 4, 0)
    assert len(parrot.warnings) == 1 and "4 of 6 turns repeat an earlier turn" in parrot.warnings[0]
    numbers = count()
    replies(lambda: hashlib.sha1(str(next(numbers)).encode()).hexdigest())  # unrelated replies
    resumed = run_debate(source, out, config, backend=backend)  # 2 rows resumed, 2 debated properly
    assert resumed.resumed_rows == 2 and (resumed.turns, resumed.repeated_turns) == (12, 4)
    assert "4 of 12 turns repeat" in resumed.warnings[0]
    good = run_debate(source, tmp_path / "good.jsonl", config, backend=backend)
    assert (good.turns, good.repeated_turns, good.empty_turns, good.warnings) == (12, 0, 0, [])
    replies(lambda: "")
    mute = run_debate(source, tmp_path / "mute.jsonl", config, backend=backend)
    assert (mute.empty_turns, mute.repeated_turns) == (12, 0) and "12 of 12 turns are empty" in mute.warnings[
        0
    ]
