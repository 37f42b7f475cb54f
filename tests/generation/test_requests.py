import json

import pytest

from lightning_sdm.errors import UserInputError
from lightning_sdm.generation import read_prompts, read_requests


def test_command_line_then_text_file_prompts_with_seeds_by_position(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("warm pad\n\n  bright marimba  \n")
    requests = read_requests(["solo cello"], str(prompts), 4.0, seed=10)
    assert [(r.index, r.prompt, r.seconds, r.seed) for r in requests] == [
        (0, "solo cello", 4.0, 10),
        (1, "warm pad", 4.0, 11),
        (2, "bright marimba", 4.0, 12),
    ]


def test_jsonl_lines_carry_their_own_seconds_and_seed(tmp_path):
    file = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "a", "seconds": 2.5, "seed": 99}, {"prompt": "b"}]
    file.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    requests = read_requests(None, str(file), 6.0, seed=0)
    assert [(r.prompt, r.seconds, r.seed) for r in requests] == [("a", 2.5, 99), ("b", 6.0, 1)]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.txt", "\n \n", "holds no prompts"),
        ("bad.jsonl", '{"prompt": "a"}\nnot json\n', "bad.jsonl:2: not JSON"),
        ("keys.jsonl", '{"prompt": "a", "secs": 3}\n', "unknown keys ['secs']"),
        ("blank.jsonl", '{"prompt": " "}\n', '"prompt" must be a non-empty string'),
        ("zero.jsonl", '{"prompt": "a", "seconds": 0}\n', "duration must be positive"),
        ("seed.jsonl", '{"prompt": "a", "seed": 1.5}\n', '"seed" must be an integer'),
    ],
)
def test_bad_prompt_files_say_where_and_what(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(UserInputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_requests(None, str(tmp_path / name), 5.0, 0)


def test_nothing_to_generate_missing_files_and_bad_durations():
    with pytest.raises(UserInputError, match="nothing to generate"):
        read_requests([], None, 5.0, 0)
    with pytest.raises(UserInputError, match="not found"):
        read_requests(None, "/nonexistent/prompts.txt", 5.0, 0)
    with pytest.raises(UserInputError, match="--seconds: the duration must be positive"):
        read_requests(["a"], None, -1.0, 0)


def test_a_prompt_file_with_a_byte_order_mark_reads_its_first_prompt_as_written(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\ufeffwarm pad\nbright marimba\n", encoding="utf-8")
    assert [r.prompt for r in read_requests(None, str(prompts), 4.0, 0)] == [
        "warm pad",
        "bright marimba",
    ]
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('\ufeff{"prompt": "a"}\n', encoding="utf-8")
    assert [r.prompt for r in read_requests(None, str(jsonl), 4.0, 0)] == ["a"]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(UserInputError, match=r"latin\.txt is not UTF-8 text"):
        read_requests(None, str(latin), 4.0, 0)


def test_a_prompt_file_that_is_a_pipe_is_read_once(tmp_path):
    """`generate --prompt_file <(grep piano prompts.txt)` hands a FIFO: it was "not found"."""
    import os
    import threading

    pipe = tmp_path / "prompts.fifo"
    os.mkfifo(pipe)
    writer = threading.Thread(target=lambda: pipe.write_text("warm pad\nsolo cello\n"))
    writer.start()
    prompts = read_prompts(None, str(pipe), seed=3)
    writer.join()
    assert [(r.prompt, r.seconds, r.seed) for r in prompts.requests(2.0)] == [
        ("warm pad", 2.0, 3),
        ("solo cello", 2.0, 4),
    ]


def test_a_folder_given_as_prompt_file_is_named_as_a_folder(tmp_path):
    with pytest.raises(UserInputError, match="is a folder: give a text or JSONL file"):
        read_requests(None, str(tmp_path), 4.0, 0)
