"""Checkpoints: a safe plain file that rebuilds everything needed to generate, and refuses,
in one line naming the file and the field, any file that is truncated, tampered with or not ours."""
import io
import json
import re
import subprocess
import sys
import zipfile
import zlib

import numpy as np
import pytest
import torch

from helpers_model import fitted_codec, random_walk_events, tiny_model
from helpers_model import one_thread  # noqa: F401  (autouse: one torch thread)
from midilstm.checkpoint import FORMAT_VERSION, Checkpoint, load_checkpoint
from midilstm.errors import CheckpointError
from midilstm.export import events_to_midi
from midilstm.generate import generate
from midilstm.lstm import NoteLSTM
from midilstm.model import LESSON_INPUTS, ModelConfig, expected_shapes
from midilstm.train import TrainConfig, train

EVENTS = random_walk_events(150, seed=3)
CODEC = fitted_codec(EVENTS, n_time_bins=6, time_strategy="quantile", velocity_bins=16)
CODES = CODEC.encode(EVENTS)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "run.pt"
    config = ModelConfig(sizes=CODEC.sizes, hidden_size=16, num_layers=2,
                         input_mode="embedding", embedding_dim=4, dropout=0.1)
    best = train(CODEC, [CODES[:240]], [CODES[240:]],
                 TrainConfig(epochs=2, seq_len=16, batch_size=8, seed=4), config,
                 checkpoint_path=path, params={"piece": "walk", "temperature": 0.9},
                 data_hashes=["abc123"], progress=False)
    return best, path


def midi_bytes(events) -> bytes:
    buffer = io.BytesIO()
    events_to_midi(events).save(file=buffer)
    return buffer.getvalue()


def test_the_file_loads_with_weights_only(saved):
    _, path = saved
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION
    assert set(payload["model_state"]) == set(tiny_model(
        CODEC, num_layers=2, input_mode="embedding", embedding_dim=4).state_dict())
    assert payload["data_hashes"] == ["abc123"]
    assert {"python", "torch", "numpy"} <= set(payload["versions"])


def test_load_restores_config_codec_history_params_and_hashes(saved):
    best, path = saved
    loaded = load_checkpoint(path)
    assert loaded.model.config == best.model.config
    assert isinstance(loaded.model.config.sizes, tuple)
    assert loaded.codec == CODEC
    np.testing.assert_array_equal(loaded.codec.encode(EVENTS), CODES)  # same encodings
    np.testing.assert_array_equal(loaded.codec.decode(CODES), CODEC.decode(CODES))
    assert loaded.history == best.history and len(loaded.history) == 2
    assert loaded.best_epoch == best.best_epoch
    assert loaded.params == {"piece": "walk", "temperature": 0.9}
    assert loaded.data_hashes == ["abc123"]
    assert loaded.train_config["seed"] == 4
    assert loaded.optimizer_state and loaded.optimizer_state["state"]
    assert not loaded.model.training
    for key, value in best.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


def test_a_loaded_model_generates_without_training_data(saved):
    best, path = saved
    loaded = load_checkpoint(path)
    primer = [(60, 80, 0.0), (60, 0, 0.3), (62, 70, 0.1), (62, 0, 0.2)]  # not from the data
    out = generate(loaded.model, loaded.codec, primer, n_events=40, seed=1)[0]
    assert len(out) >= 40
    assert midi_bytes(out) == midi_bytes(generate(best.model, CODEC, primer, n_events=40,
                                                  seed=1)[0])


def test_numpy_values_are_saved_as_plain_numbers(tmp_path):
    ckpt = Checkpoint(model=tiny_model(CODEC), codec=CODEC,
                      history=[{"val": {"nll": np.float64(1.5)}}],
                      params={"n": np.int64(3), "arr": np.arange(3)})
    ckpt.save(tmp_path / "c.pt")
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded.history == [{"val": {"nll": 1.5}}]
    assert loaded.params == {"n": 3, "arr": [0, 1, 2]}


def test_an_unknown_format_is_refused(tmp_path):
    torch.save({"format_version": 999}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="format"):
        load_checkpoint(tmp_path / "x.pt")


# --- a tampered, truncated or foreign file gives one line naming the file and the field ----------
@pytest.mark.parametrize("kw", [dict(), dict(num_layers=3), dict(input_mode="embedding"),
                                dict(input_mode="embedding", embedding_dim=3, num_layers=2),
                                dict(sounding_input=False),
                                dict(input_mode="embedding", sounding_input=False, num_layers=2),
                                dict(key_input=False),
                                dict(input_mode="embedding", key_input=False),
                                dict(LESSON_INPUTS),
                                dict(input_mode="embedding", sounding_input=False,
                                     key_input=False)])
def test_expected_shapes_are_the_models_own(kw):
    """Built on the meta device (no memory), checked against a model really built."""
    config = ModelConfig(sizes=CODEC.sizes, hidden_size=5, **kw)
    real = {k: tuple(v.shape) for k, v in NoteLSTM(config).state_dict().items()}
    assert expected_shapes(config) == real
    assert all(t.device.type == "cpu" for t in NoteLSTM(config).state_dict().values())


def tamper(source, target, change) -> str:
    """Copy the checkpoint ``source`` to ``target`` with ``change(payload)`` applied."""
    payload = torch.load(source, weights_only=True)
    change(payload)
    torch.save(payload, target)
    return str(target)


def refused(path, match) -> str:
    """The one-line ``CheckpointError`` that loading ``path`` must give; returns its text."""
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    assert re.search(match, message), message
    return message


def set_in(*keys_and_value):
    *keys, value = keys_and_value

    def change(payload):
        target = payload
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return change


def drop(*keys):
    def change(payload):
        target = payload
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return change


OTHER_CODEC = fitted_codec(EVENTS, n_time_bins=12, time_strategy="log")  # sizes (89, 128, 13)
OTHER_SIZES = list(OTHER_CODEC.sizes)

TAMPERED = {
    # the codec no longer matches the model (the exploit that once overran generation's buffers)
    "codec sizes": (set_in("codec", OTHER_CODEC.to_dict()),
                    r"model_config.sizes \(89, 17, 7\) disagree with the codec's sizes "
                    r"\(89, 128, 13\)"),
    "codec and config sizes": (
        lambda p: (p["codec"].update(OTHER_CODEC.to_dict()),
                   p["model_config"].update(sizes=OTHER_SIZES)),
        r"model_state.embeddings.1.weight has shape \(17, 4\), but the codec's sizes "
        r"\(89, 128, 13\) call for \(128, 4\)"),
    # the saved model reads the sounding pitches, their ages and the key: 3 * 4 embedding
    # + 4 sounding + 4 ages + 12 key shares = 32 inputs
    "hidden size": (set_in("model_config", "hidden_size", 17),
                    r"model_state.lstm.weight_ih_l0 has shape \(64, 32\), but "
                    r"model_config.hidden_size 17 call for \(68, 32\)"),
    "embedding size": (set_in("model_config", "embedding_dim", 5),
                       r"embeddings.0.weight has shape \(89, 4\), but "
                       r"model_config.embedding_dim 5 call for \(89, 5\)"),
    "input mode": (set_in("model_config", "input_mode", "one_hot"),
                   r"lstm.weight_ih_l0 has shape \(64, 32\), but the codec's sizes \(89, 17, 7\) and "
                   r"model_config \(input_mode one_hot, sounding_input True, key_input True, "
                   r"age_input True\) call for \(64, 303\)"),
    **{f"{told} input {how}": (change(f"{told}_input"),
                               r"lstm.weight_ih_l0 has shape \(64, 32\), but model_config "
                               r"\(input_mode embedding, embedding_dim 4, "
                               + ", ".join(f"{name}_input {name != told}"
                                           for name in ("sounding", "key", "age"))
                               + rf"\) call for \(64, {32 - width}\)")
       for told, width in (("sounding", 4), ("key", 12), ("age", 4))
       for how, change in (("off", lambda key: set_in("model_config", key, False)),
                           ("dropped", lambda key: drop("model_config", key)))},  # an old file
    "all three inputs dropped": (lambda p: [p["model_config"].pop(f"{name}_input")
                                            for name in ("sounding", "key", "age")],
                                 r"lstm.weight_ih_l0 has shape \(64, 32\), but "
                                 r"model_config \(input_mode embedding, embedding_dim 4, "
                                 r"sounding_input False, key_input False, age_input False\) "
                                 r"call for \(64, 12\)"),
    "sounding table dropped": (drop("model_state", "sounding_embedding.weight"),
                               r"model_state.sounding_embedding.weight is missing"),
    "sounding table too narrow": (lambda p: p["model_state"].update(
        {"sounding_embedding.weight": p["model_state"]["sounding_embedding.weight"][:, :88]}),
        r"model_state.sounding_embedding.weight has shape \(4, 88\), but the codec's sizes "
        r"\(89, 17, 7\) call for \(4, 89\)"),
    "one layer fewer": (set_in("model_config", "num_layers", 1),
                        r"model_state.lstm.weight_ih_l1 is not a weight of this model"),
    "one layer more": (set_in("model_config", "num_layers", 3),
                       r"model_state.lstm.weight_ih_l2 is missing"),
    # config fields: types and bounds
    "hidden as text": (set_in("model_config", "hidden_size", "16"),
                       r"model_config.hidden_size must be an integer in 1..4096, got '16'"),
    "hidden as float": (set_in("model_config", "hidden_size", 16.0), r"model_config.hidden_size"),
    "no layers": (set_in("model_config", "num_layers", 0), r"model_config.num_layers .* 1..8"),
    "many layers": (set_in("model_config", "num_layers", 50), r"model_config.num_layers"),
    "dropout 1": (set_in("model_config", "dropout", 1.0), r"model_config.dropout .* \[0, 1\)"),
    "dropout NaN": (set_in("model_config", "dropout", float("nan")), r"model_config.dropout"),
    "unknown mode": (set_in("model_config", "input_mode", "conv"), r"model_config.input_mode"),
    "sounding as text": (set_in("model_config", "sounding_input", "yes"),
                         r"model_config.sounding_input must be true or false, got 'yes'"),
    "key as a number": (set_in("model_config", "key_input", 1),
                        r"model_config.key_input must be true or false, got 1"),
    "two sizes": (set_in("model_config", "sizes", [89, 17]), r"model_config.sizes must be three"),
    "sizes as text": (set_in("model_config", "sizes", "89,17,7"), r"model_config.sizes"),
    "huge sizes": (set_in("model_config", "sizes", [89, 17, 10**9]), r"model_config.sizes"),
    "extra config field": (set_in("model_config", "activation", "relu"),
                           r"model_config.'activation' is not a config field"),
    "no sizes": (drop("model_config", "sizes"), r"model_config.sizes is missing"),
    # the weights themselves
    "missing weight": (drop("model_state", "head.bias"), r"model_state.head.bias is missing"),
    "extra weight": (set_in("model_state", "head.scale", torch.ones(3)),
                     r"model_state.head.scale is not a weight of this model"),
    "integer weight": (lambda p: p["model_state"].update(
        {"head.bias": p["model_state"]["head.bias"].long()}),
        r"model_state.head.bias must be a dense float tensor, not torch.int64"),
    "weight as list": (lambda p: p["model_state"].update(
        {"head.bias": p["model_state"]["head.bias"].tolist()}),
        r"model_state.head.bias must be a tensor, not list"),
    "NaN weight": (lambda p: p["model_state"]["head.weight"].__setitem__((0, 0), float("nan")),
                   r"model_state.head.weight holds NaN or infinite values"),
    # the codec inside
    "negative edges": (lambda p: p["codec"].update(
        time_edges_s=[-e for e in p["codec"]["time_edges_s"]]),
        r"codec: time_edges_s\[0\] must be a finite number >= 0"),
    "huge n_time_bins": (set_in("codec", "n_time_bins", 1e7), r"codec: n_time_bins"),
    "unfitted codec": (lambda p: p["codec"].update(time_edges_s=[], time_centers_s=[]),
                       r"codec: time_edges_s is empty"),
    # the payload
    "format as bool": (set_in("format_version", True), r"format_version is True: unknown"),
    "no codec": (drop("codec"), r"codec must be a dict, not NoneType"),
    "foreign entry": (set_in("script", "import os"), r"'script' is not a checkpoint entry"),
    "history as text": (set_in("history", "none"), r"history has the wrong type \(str\)"),
    "best epoch as text": (set_in("best_epoch", "3"), r"best_epoch has the wrong type"),
}


@pytest.mark.parametrize("name", TAMPERED)
def test_a_tampered_checkpoint_names_the_file_and_the_field(saved, tmp_path, name):
    change, match = TAMPERED[name]
    refused(tamper(saved[1], tmp_path / "model.pt", change), match)


@pytest.mark.parametrize("hidden, match", [(20000, "hidden_size must be an integer in 1..4096"),
                                           (4000, "has shape .* model_config.hidden_size 4000")])
def test_a_huge_hidden_size_is_refused_at_once_without_allocating(saved, tmp_path, hidden, match):
    """The file holds a small model but claims a huge hidden size: building that model first
    (as loading once did) allocates gigabytes (20000: out of bounds; 4000: within bounds, but
    not the weights' shapes). Measured in a fresh process: time, and growth of peak memory."""
    path = tamper(saved[1], tmp_path / "model.pt", set_in("model_config", "hidden_size", hidden))
    script = f"""
import json, resource, time
from midilstm.checkpoint import load_checkpoint
from midilstm.errors import CheckpointError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    load_checkpoint({path!r})
    message = None
except CheckpointError as err:
    message = str(err)
seconds = time.perf_counter() - start
grown_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps([message, seconds, grown_kb]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    message, seconds, grown_kb = json.loads(done.stdout.strip().splitlines()[-1])
    assert message and re.search(match, message), message
    assert seconds < 5.0, seconds  # the unchecked load took 38 s; memory is the real guard
    assert grown_kb < 50_000, f"peak memory grew by {grown_kb} kB"


def test_truncated_files_are_refused(saved, tmp_path):
    data = saved[1].read_bytes()
    cut = tmp_path / "model.pt"
    for length in (0, 1, 4, 100, len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 1):
        cut.write_bytes(data[:length])
        refused(cut, r"is not a checkpoint: not a complete zip archive")


def test_files_that_are_not_checkpoints(saved, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(midi_bytes(EVENTS[:10]))
    refused(path, r"not a complete zip archive")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    refused(path, r"a zip archive without torch's data.pkl")
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"\x80\x02garbage")
    refused(path, r"is not a readable checkpoint \(")
    with zipfile.ZipFile(saved[1]) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name in source.namelist():
            z.writestr(name, source.read(name))
    refused(path, r"never compresses")
    torch.save([1, 2, 3], path)
    refused(path, r"holds a list, not a checkpoint dict")
    torch.save({"format_version": FORMAT_VERSION}, path, _use_new_zipfile_serialization=False)
    refused(path, r"not a complete zip archive")
    refused(tmp_path / "missing.pt", r"cannot read it \(No such file")
    refused(tmp_path, r"cannot read it")


def test_code_in_a_checkpoint_is_refused_not_run(saved, tmp_path):
    """A pickle that would call a function is stopped by ``weights_only``, as one line."""
    class Boom:
        def __reduce__(self):
            return (print, ("ran code from a checkpoint",))

    path = tmp_path / "model.pt"
    payload = torch.load(saved[1], weights_only=True)
    payload["params"] = {"x": Boom()}
    torch.save(payload, path)
    message = refused(path, r"is not a readable checkpoint \(UnpicklingError: Weights only load "
                            r"failed\. ")
    # torch's whole refusal, on one line without its terminal colours: the reason, its advice
    # and its last sentence (the first line alone, cut to 200 characters, once said none of it)
    assert "Unsupported global: GLOBAL print was not an allowed global by default." in message
    assert message.endswith("https://pytorch.org/docs/stable/generated/torch.load.html.)")
    assert "\x1b" not in message and "  " not in message and len(message) > 600


def pickle_naming(path, name: bytes):
    """A checkpoint whose pickle calls the global ``__builtin__.<name>``: torch refuses it."""
    class Boom:
        def __reduce__(self):
            return (print, ("ran code from a checkpoint",))

    buffer = io.BytesIO()
    torch.save({"x": Boom()}, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, "w") as target:
        for entry in source.namelist():  # written again, stored, with the CRCs of what it holds
            data = source.read(entry)
            target.writestr(entry, data.replace(b"\nprint\n", b"\n" + name + b"\n")
                            if entry.endswith("data.pkl") else data)
    return path


def test_a_long_global_name_is_refused_before_torch_spends_minutes_on_it(tmp_path):
    """torch searches its refusal, which repeats the name, with patterns that take minutes
    on a long name (100,000 characters: 189 s): such a name is refused first, at once."""
    path = pickle_naming(tmp_path / "model.pt", b"A" * 100_000)
    script = f"""
import time
from midilstm.checkpoint import load_checkpoint
from midilstm.errors import CheckpointError
start = time.perf_counter()
try:
    load_checkpoint({str(path)!r})
except CheckpointError as err:
    print(time.perf_counter() - start, err)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    seconds, message = done.stdout.strip().split(" ", 1)
    assert message == (f"{path}: data.pkl names a global of 100012 characters (torch allows "
                       f"none over 1000): not ours")
    assert float(seconds) < 2.0, seconds


def test_torchs_refusal_of_a_long_name_it_may_read_is_kept_whole(tmp_path):
    from midilstm.checkpoint import MAX_GLOBAL, MAX_REFUSAL, _refusal_text
    path = pickle_naming(tmp_path / "model.pt", b"A" * (MAX_GLOBAL - len("__builtin__ ")))
    message = refused(path, r"is not a readable checkpoint \(UnpicklingError: Weights only load "
                            r"failed\. .*GLOBAL A{900}")
    assert message.endswith("torch.load.html.)") and message.count("A" * 900) == 3
    text = _refusal_text(ValueError("\x1b[1mbold\x1b[0m\n\tand " + "B" * 10_000))
    assert text == (f"bold and {'B' * (MAX_REFUSAL - 9)}... ({9 + 10_000 - MAX_REFUSAL} more "
                    f"characters)")  # longer than torch says for any name allowed: cut


def test_loaded_tensors_do_not_depend_on_the_file(tmp_path):
    """Tensors are memory-mapped while checking; the optimizer state is then copied, so
    overwriting the file in place (no atomic rename) cannot crash a reader (SIGBUS)."""
    path = tmp_path / "model.pt"
    Checkpoint(model=tiny_model(CODEC), codec=CODEC,
               optimizer_state={"state": {0: {"exp_avg": torch.ones(300_000)}},
                                "param_groups": [{"betas": (0.9, 0.99)}]}).save(path)
    script = f"""
from pathlib import Path
from midilstm.checkpoint import load_checkpoint
loaded = load_checkpoint({str(path)!r})
Path({str(path)!r}).write_bytes(b"")  # truncate in place: a mapped page now has no file behind it
print(float(loaded.optimizer_state["state"][0]["exp_avg"].sum()),
      loaded.optimizer_state["param_groups"][0]["betas"])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"rc {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.split() == ["300000.0", "(0.9,", "0.99)"]


# --- a damaged file: every zip entry's CRC-32 is checked before torch reads it -------------------
LOCAL_HEADER_SIZE = 30  # a zip local file header, before its name and extra field


def data_region(path, entry: zipfile.ZipInfo) -> range:
    """The byte offsets of ``entry``'s data in the file (after its local header)."""
    with open(path, "rb") as file:
        file.seek(entry.header_offset)
        header = file.read(LOCAL_HEADER_SIZE)
    start = (entry.header_offset + LOCAL_HEADER_SIZE + int.from_bytes(header[26:28], "little")
             + int.from_bytes(header[28:30], "little"))
    return range(start, start + entry.compress_size)


def flipped(source, target, offset: int, bit: int):
    data = bytearray(source.read_bytes())
    data[offset] ^= 1 << bit
    target.write_bytes(bytes(data))
    return target


def test_single_bit_flips_in_the_tensors_are_refused_naming_the_entry(saved, tmp_path):
    """An audit flipped one bit in a checkpoint's tensors 150 times: 148 loaded silently (a
    weight changed, or an optimizer moment), and generate ran on them. Every flip is refused."""
    _, source = saved
    with zipfile.ZipFile(source) as archive:
        tensors = [e for e in archive.infolist() if re.search(r"/data/\d+$", e.filename)]
    regions = {e.filename: data_region(source, e) for e in tensors}
    assert len(regions) >= 10 and sum(map(len, regions.values())) > 5_000
    with open(source, "rb") as file:  # the regions found are the entries' data: CRCs agree
        for entry in tensors:
            file.seek(regions[entry.filename].start)
            assert zlib.crc32(file.read(entry.compress_size)) == entry.CRC, entry.filename
    rng = np.random.default_rng(18)
    spots = [(name, region[0]) for name, region in regions.items()]  # each tensor's first byte
    spots += [(name, region[-1]) for name, region in regions.items()]  # and its last
    everywhere = [(name, offset) for name, region in regions.items() for offset in region]
    spots += [everywhere[i] for i in rng.choice(len(everywhere), 24, replace=False)]
    assert len(spots) >= 30
    path = tmp_path / "model.pt"
    for i, (name, offset) in enumerate(spots):
        flipped(source, path, offset, bit=i % 8)
        message = refused(path, re.escape(f"{name} fails its CRC check: the file is damaged"))
        assert message == f"{path}: {name} fails its CRC check: the file is damaged"
    load_checkpoint(source)  # the untouched file still loads
    path.write_bytes(source.read_bytes())
    assert load_checkpoint(path).model.config == load_checkpoint(source).model.config


def test_flips_in_the_pickle_and_the_zip_headers_are_refused(saved, tmp_path):
    _, source = saved
    with zipfile.ZipFile(source) as archive:
        entries = {e.filename.split("/", 1)[1]: e for e in archive.infolist()}
    pickle, tensor = entries["data.pkl"], entries["data/0"]
    path = tmp_path / "model.pt"
    for offset in (data_region(source, pickle)[0], data_region(source, pickle)[-1],
                   data_region(source, pickle)[len(pickle.filename)]):
        refused(flipped(source, path, offset, 3), f"{pickle.filename} fails its CRC check")
    refused(flipped(source, path, tensor.header_offset, 0),  # the local header's magic number
            f"{tensor.filename} is damaged: its local header is not the one the zip's directory "
            f"describes")
    refused(flipped(source, path, tensor.header_offset + LOCAL_HEADER_SIZE + 2, 1),  # its name
            f"{tensor.filename} is damaged")


def test_overlapping_entries_are_refused_before_they_are_read(tmp_path):
    """Entries pointing at one region would read the file once per entry: refused at once."""
    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as archive:  # stored: the default
        archive.writestr("archive/data.pkl", b"x" * 1000)
    data = bytearray(path.read_bytes())
    directory = data.index(b"PK\x01\x02")
    record, end = data[directory:data.index(b"PK\x05\x06")], data[data.index(b"PK\x05\x06"):]
    copies = 50
    end[8:10] = end[10:12] = copies.to_bytes(2, "little")  # entries on this disk, and in all
    end[12:16] = (len(record) * copies).to_bytes(4, "little")
    path.write_bytes(bytes(data[:directory] + record * copies + end))
    with zipfile.ZipFile(path) as archive:
        assert len(archive.infolist()) == copies  # zipfile itself reads it
    refused(path, r"is not a checkpoint: its zip entries overlap")


def test_generate_refuses_a_flipped_bit_in_one_line(saved, tmp_path):
    """The audit's case end to end: ``midilstm generate`` on a damaged file fails, in one line."""
    _, source = saved
    with zipfile.ZipFile(source) as archive:
        entry = next(e for e in archive.infolist() if e.filename.endswith("/data/0"))
    path = flipped(source, tmp_path / "model.pt", data_region(source, entry)[7], 5)
    done = subprocess.run([sys.executable, "-m", "midilstm", "generate", "--checkpoint",
                           str(path), "--out", str(tmp_path / "gen")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{entry.filename} fails its CRC check" in lines[0], done.stderr
    assert not (tmp_path / "gen").exists() or not any((tmp_path / "gen").iterdir())
