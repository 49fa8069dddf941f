"""The models shipped in flowlearn/irn/weights/ and the scripts that export and evaluate them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from flowlearn.irn import checkpoint
from flowlearn.irn.checkpoint import (
    TRAINING_FORMAT,
    available_models,
    load,
    model_info,
    save,
    to_official,
    weights_dir,
)
from tests.conftest import (
    ROOT,
    benchmark_script,
    figure_script,
    irn_reference,
    tiny_irn,
    write_images,
)


def test_weights_folder_is_package_data() -> None:
    folder = ROOT / "flowlearn" / "irn" / "weights"
    assert weights_dir().resolve() == folder.resolve()
    assert (folder / "README.md").is_file()
    for path in folder.glob("irn_x*.safetensors"):  # what ships must carry its measured quality
        info = model_info(path)
        assert info["dtype"] == "float16", path.name
        meta = info["metadata"]
        assert meta["set5_psnr_y"] > meta["set5_bicubic_psnr_y"], path.name
        assert not meta["forced_export"], path.name
    for name, path in available_models().items():
        model = load(name)
        scale = int(name[1:].removesuffix("_plus"))  # x4_plus: IRN+ x4
        assert model.scale == scale and not model.training, path.name
        assert {p.dtype for p in model.parameters()} == {torch.float32}, path.name


def test_weights_readme_sizes_are_the_shipped_files() -> None:
    folder = ROOT / "flowlearn" / "irn" / "weights"
    rows = [
        table_cells(line)
        for line in (folder / "README.md").read_text().splitlines()
        if line.startswith("| `irn_x") and "bytes" in line
    ]
    assert {cells[0].strip("`") for cells in rows} == {p.name for p in folder.glob("irn_x*")}
    for name, tensors, whole in rows:
        path = folder / name.strip("`")
        count = int(tensors.split(" weights")[0].replace(",", ""))
        model = load(path)
        assert count == sum(p.numel() for p in model.parameters()), name
        assert int(whole.split(" bytes")[0].replace(",", "")) == path.stat().st_size, name


# ------------------------------------------------------------------------------ export script


@pytest.fixture
def tiny_sets(tmp_path: Path) -> tuple[Path, Path]:
    sizes = [(32, 32), (32, 32)]
    return write_images(tmp_path / "set5", sizes), write_images(tmp_path / "set14", sizes, seed=2)


def test_export_refuses_model_worse_than_bicubic(
    tmp_path: Path,
    tiny_sets: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(checkpoint, "weights_dir", lambda: tmp_path / "no_weights")
    export = benchmark_script("export_pretrained")
    run = save(
        tiny_irn(2), tmp_path / "model.pt"
    )  # untrained: its z-sampled reconstruction loses to bicubic
    out = tmp_path / "irn_x2.safetensors"
    argv = [str(run), "--out", str(out), "--set5", str(tiny_sets[0]), "--set14",
            str(tiny_sets[1]), "--draws", "2", "--device", "cpu",
            "--hardware", "test CPU"]  # fmt: skip
    assert export.main([*argv, "--skip-set14"]) == 1
    assert "refusing to export" in capsys.readouterr().err
    assert not out.exists()
    assert export.main([*argv, "--force"]) == 0
    meta = model_info(out)["metadata"]
    assert meta["forced_export"] is True and meta["hardware"] == "test CPU"
    assert meta["scale"] == 2 and meta["blocks"] == [1] and meta["draws"] == 2
    assert meta["set5_psnr_y"] < meta["set5_bicubic_psnr_y"]
    assert {"set14_psnr_y", "set14_psnr_y_std", "set5_ssim_y"} <= set(meta)
    evaluate = benchmark_script("evaluate_pretrained")
    argv = ["--scales", "2", "4", "--model", f"x2={out}", "--set5", str(tiny_sets[0]),
            "--set14", str(tiny_sets[1]), "--draws", "2", "--device", "cpu"]  # fmt: skip
    assert evaluate.main(argv) == 0
    table = capsys.readouterr().out
    assert "| ×2 | IRN (mean of 2 z draws ± spread) |" in table
    assert "43.99 / 0.9871" in table and "30.24 / 0.8688" in table


def test_export_records_the_training_clock_unless_told_not_to(
    tmp_path: Path, tiny_sets: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "weights_dir", lambda: tmp_path / "no_weights")
    export = benchmark_script("export_pretrained")
    net = tiny_irn(2)
    run = tmp_path / "checkpoint.pt"  # the layout of flowlearn.irn.train's checkpoints
    torch.save(
        {"format": TRAINING_FORMAT, "model_config": dict(net.config),
         "model": net.state_dict(), "step": 7, "seconds": 12.34, "config": {}},
        run,
    )  # fmt: skip
    out = tmp_path / "irn_x2.safetensors"
    argv = [str(run), "--out", str(out), "--set5", str(tiny_sets[0]), "--skip-set14",
            "--draws", "1", "--device", "cpu", "--force"]  # fmt: skip
    assert export.main(argv) == 0
    meta = model_info(out)["metadata"]
    assert meta["steps"] == 7 and meta["wall_time_s"] == pytest.approx(12.3)
    assert export.main([*argv, "--no-wall-time"]) == 0
    meta = model_info(out)["metadata"]
    assert meta["steps"] == 7 and meta["wall_time_s"] is None
    assert "fine_tune_steps" not in meta
    assert export.main([*argv, "--prior-steps", "100"]) == 0  # a fine-tune of a 100-step model
    meta = model_info(out)["metadata"]
    assert (meta["steps"], meta["fine_tune_steps"]) == (107, 7)


@pytest.mark.parametrize("name", ["x2", "x4"])
def test_shipped_model_round_trips_through_the_original_layout(name: str) -> None:
    """The shipped files load into the original code's state-dict layout exactly."""
    assert name in available_models(), f"flowlearn ships IRN {name}"
    shipped = load(name)
    official = to_official(shipped)
    # the key names of the original code's checkpoint of this scale (Haar kernels included)
    assert list(official) == list(irn_reference(int(name[1:]))["state_dict"])
    again = load(official, scale=shipped.scale)
    a, b = shipped.state_dict(), again.state_dict()
    assert list(a) == list(b)
    assert all(torch.equal(a[k], b[k]) for k in a)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(shipped(x)[0], again(x)[0])


def test_finetune_log_joins_the_stages_of_a_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    join = benchmark_script("irn_finetune_log")
    header = "step,seconds,fit,psnr_y_sampled"
    stages = {
        "a": ("data: {prescale: 0.5}\n", "\n100,1.0,5.0,\n200,2.0,4.0,38.9\n300,3.0,3.9,\n"),
        "b": (  # a newer run's log has one column more
            "data: {prescale: 0.5, recolour: 0.5, noise: 0.5, batch_size: 16}\n"
            "loss: {lambda_fit: 16}\noptim: {warmup: 100}\n",
            ",lr_psnr_rgb\n100,1.5,9.0,38.5,36.2\n",
        ),
    }
    for name, (config, log) in stages.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.yaml").write_text(config)
        (tmp_path / name / "log.csv").write_text(header + log)
    out = tmp_path / "curve.csv"
    assert join.main([f"{tmp_path / 'a'}:200", f"{tmp_path / 'b'}:100", "--base-steps", "1000",
                      "--out", str(out)]) == 0  # fmt: skip
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["stage"], r["step"], r["total_step"]) for r in rows] == [
        ("1", "100", "1100"),
        ("1", "200", "1200"),
        ("2", "100", "1300"),
    ]
    assert [(r["prescale"], r["recolour"], r["noise"], r["lambda_fit"]) for r in rows[1:]] == [
        ("0.5", "0.0", "0.0", ""),
        ("0.5", "0.5", "0.5", "16"),
    ]
    assert [r["lr_psnr_rgb"] for r in rows] == ["", "", "36.2"]
    assert [r["batch_size"] for r in rows] == ["", "", "16"]  # set in b's configuration only
    assert [r["warmup"] for r in rows] == ["0", "0", "100"]  # a's: the default, no warm-up
    # --after: a stage added to that log once its runs' folders are gone
    longer = tmp_path / "longer.csv"
    assert join.main(["--after", str(out), f"{tmp_path / 'a'}:100", "--out", str(longer)]) == 0
    with longer.open(newline="") as f:
        extended = list(csv.DictReader(f))
    assert extended[:3] == rows  # the log's rows, unchanged
    added = [(r["stage"], r["step"], r["total_step"]) for r in extended[3:]]
    assert added == [("3", "100", "1400")]
    # stages tried in between and not shipped keep their numbers
    assert join.main(["--after", str(out), "--first-stage", "5", f"{tmp_path / 'a'}:100",
                      "--out", str(longer)]) == 0  # fmt: skip
    with longer.open(newline="") as f:
        assert [r["stage"] for r in csv.DictReader(f)] == ["1", "1", "2", "5"]
    with pytest.raises(SystemExit):
        join.main(["--after", str(out), "--first-stage", "2", f"{tmp_path / 'a'}:100", "--out",
                   str(longer)])  # fmt: skip
    assert "--first-stage 2: the stages before go to 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the steps come from the log
        join.main(["--after", str(out), f"{tmp_path / 'a'}:100", "--base-steps", "5", "--out",
                   str(longer)])  # fmt: skip
    with pytest.raises(SystemExit, match=r"no row for step 250 \(last: 200\)"):
        join.main([f"{tmp_path / 'a'}:250", "--out", str(out)])


@pytest.mark.parametrize("name", ["x2", "x4"])
def test_model_card_quality_rows_are_the_shipped_files_numbers(name: str) -> None:
    meta = model_info(name)["metadata"]
    card = (ROOT / "docs" / "model-card.md").read_text()
    row = next(line for line in card.splitlines() if f"IRN, shipped `{name}`" in line)
    cells = table_cells(row)
    for cell, key in zip(cells[2:4], ("set5", "set14"), strict=True):
        psnr, spread, ssim = (float(v) for v in cell.replace("±", "/").split("/"))
        assert psnr == pytest.approx(meta[f"{key}_psnr_y"], abs=0.006), (name, key)
        assert spread == pytest.approx(meta[f"{key}_psnr_y_std"], abs=0.0006), (name, key)
        assert ssim == pytest.approx(meta[f"{key}_ssim_y"], abs=0.00006), (name, key)


@pytest.mark.parametrize(
    "log",
    sorted((ROOT / "benchmarks/results").glob("irn_x*_finetune_log.csv")),
    ids=lambda p: p.name,
)
def test_model_card_fine_tune_table_is_the_stored_log(log: Path) -> None:
    name = log.name.split("_")[1]  # irn_x2_finetune_log.csv -> x2
    with log.open(newline="") as f:
        rows = list(csv.DictReader(f))
    card = (ROOT / "docs" / "model-card.md").read_text()
    section = card[card.index(f"### The ×{name[1:]} ") :]
    section = section[: section.index("\n## ")]  # up to the next section of the card
    stages = {r["stage"]: r for r in rows}  # the last row of each stage
    assert int(rows[-1]["total_step"]) == model_info(name)["metadata"]["steps"]
    for stage, last in stages.items():
        line = next(row for row in section.splitlines() if row.startswith(f"| {stage} | "))
        assert f"{int(last['step']):,}" in line and f"{int(last['total_step']):,}" in line
        validated = last["psnr_y_sampled"]  # empty for a stage run without validation
        end = f"{float(validated):.2f}" if validated else "—"
        assert line.rstrip(" |").endswith(end), line


def test_model_card_training_table_counts_the_logged_steps() -> None:
    """The card's training table states each model's fine-tune stages and, for the x4, how many
    of its last steps ran on 144² patches and in batches of 16, as the fine-tune logs hold them."""
    card = (ROOT / "docs" / "model-card.md").read_text()
    section = card[card.index("## Training") :].split("\n\n")[1]  # the table under the heading
    table = {cells[0]: cells[1:] for cells in map(table_cells, section.splitlines()[2:])}
    ends = {}  # name -> the last log row of each of its stages
    for column, name in enumerate(("x2", "x4")):
        with (ROOT / f"benchmarks/results/irn_{name}_finetune_log.csv").open(newline="") as f:
            last = list({r["stage"]: r for r in csv.DictReader(f)}.values())
        ends[name] = last
        cell = table["steps"][column]  # "5,000, then fine-tunes of 500, 800 and 600 ([below]..."
        base, tunes = cell.split(" ([")[0].split(", then fine-tunes of ")
        lengths = [int(n.replace(",", "")) for n in tunes.replace(" and ", ", ").split(", ")]
        assert int(base.replace(",", "")) + sum(lengths) == model_info(name)["metadata"]["steps"]
        assert sum(lengths) == sum(int(r["step"]) for r in last), cell
        if len(lengths) > 1:
            assert lengths == [int(r["step"]) for r in last], cell
    patch = table["patch / batch"][1]  # "same; 144 px for the last N steps, batch 16 for …"
    wide = sum(int(r["step"]) for r in ends["x4"] if r["patch_size"] == "144")
    big = sum(int(r["step"]) for r in ends["x4"] if r["batch_size"] == "16")
    assert f"144 px for the last {wide:,} steps, batch 16 for the last {big:,}" in patch
    status = card[: card.index("## What the models are")]  # the status box says it too
    steps = model_info("x4")["metadata"]["steps"]
    assert f"{steps:,} steps (×4: 5,000, then" in status
    assert f"last {wide:,}, 144×144, the last {big:,} of them in batches of 16" in status
    readme = (ROOT / "flowlearn/irn/weights/README.md").read_text()
    for name in ("x2", "x4"):
        assert f"{model_info(name)['metadata']['steps']:,} steps in all" in readme, name


def test_shipped_metadata_names_no_path_of_the_development_machine() -> None:
    for name in available_models():
        text = json.dumps(model_info(name)["metadata"])
        assert "../" not in text and "datasets/" not in text, name


def test_export_trials_collects_the_numbers_an_export_stored(tmp_path: Path) -> None:
    collect = benchmark_script("irn_export_trials")
    numbers = {"set5_psnr_y": 40.1, "set5_ssim_y": 0.97, "set14_psnr_y": 37.2, "steps": 99}
    save(tiny_irn(2), tmp_path / "a.safetensors", metadata=numbers, dtype=torch.float16)
    out = tmp_path / "trials.json"
    out.write_text(json.dumps({"old": {"set5_psnr_y": 1.0}}))
    assert collect.main([f"a={tmp_path / 'a.safetensors'}", "--out", str(out), "--merge"]) == 0
    stored = json.loads(out.read_text())
    assert stored == {
        "a": {k: v for k, v in numbers.items() if k != "steps"},
        "old": {"set5_psnr_y": 1.0},
    }
    save(tiny_irn(2), tmp_path / "b.safetensors", dtype=torch.float16)  # no numbers in it
    with pytest.raises(SystemExit, match="holds no paper-protocol numbers"):
        collect.main([f"b={tmp_path / 'b.safetensors'}", "--out", str(out)])


def test_export_trials_reports_a_set14_gain_within_the_draw_spread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    collect = benchmark_script("irn_export_trials")
    shipped = model_info("x2")["metadata"]
    spread = (2 * shipped["set14_psnr_y_std"] ** 2) ** 0.5
    verdicts = {
        "below": (-0.01, "does not beat it on Set14"),
        "within": (spread / 2, "by no more than the spread over z draws"),
        "above": (spread + 0.01, "beats it on Set14"),
    }
    for name, (gain, _) in verdicts.items():
        numbers = {k: shipped[k] for k in ("set5_psnr_y", "set14_psnr_y_std")}
        numbers["set14_psnr_y"] = shipped["set14_psnr_y"] + gain
        save(tiny_irn(2), tmp_path / f"{name}.safetensors", metadata=numbers, dtype=torch.float16)
    files = [f"{name}={tmp_path / name}.safetensors" for name in verdicts]
    assert collect.main([*files, "--out", str(tmp_path / "trials.json")]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "against the shipped" in line]
    assert len(lines) == 3
    for line, (name, (gain, verdict)) in zip(lines, verdicts.items()):
        assert f"Set14 {gain:+.3f} dB" in line and line.endswith(verdict) == (name != "within")
        assert verdict in line, name


def card_table(heading: str, first_cell: str) -> list[list[str]]:
    """The cells of the model card's first table after `heading` that starts with
    `first_cell`: its header row, then its body rows (the separator row left out)."""
    card = (ROOT / "docs" / "model-card.md").read_text()
    section = card[card.index(heading) :]
    lines = section[section.index(f"| {first_cell} |") :].split("\n\n")[0].splitlines()
    return [table_cells(line) for line in lines[:1] + lines[2:]]


def table_cells(line: str) -> list[str]:
    """The cells of one markdown table row, stripped: "| a | b |" -> ["a", "b"]."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def assert_card_scores(cell: str, trial: dict[str, float], row: list[str]) -> None:
    """A card cell "Set5 / Set14" Y-PSNR holds the trial export's numbers (2 decimals)."""
    set5, set14 = (float(v) for v in cell.split(" / "))
    assert set5 == pytest.approx(trial["set5_psnr_y"], abs=0.006), row
    assert set14 == pytest.approx(trial["set14_psnr_y"], abs=0.006), row


@pytest.mark.parametrize(
    ("heading", "first_cell", "key", "start", "ships"),
    [
        ("**Stage 4, checkpoint by checkpoint.**", "stage 4 step", "x2_stage4_step{}", "x2_stage3",
         True),
        ("### The ×4 noise fine-tune", "step", "x4_noise_step{}", "x4_5000_steps", False),
        ("### The ×4 fine-tune on 144² patches", "step", "x4_p144_step{}", "x4_noise_step500",
         False),
        ("**Stage 3: 800 more steps on 144² patches", "step", "x4_p144b_step{}",
         "x4_p144_step800", False),
        ("**Stage 4: a longer constant rate", "step", "x4_p144c_step{}", "x4_p144b_step800",
         False),
        ("**Stage 5: the paper's batch of 16", "step", "x4_p144d_step{}", "x4_p144c_step1600",
         False),
        ("**Stage 6: a warm-up", "step", "x4_p144e_step{}", "x4_p144d_step600", False),
        ("**Stage 7: stage 6 again", "step", "x4_p144f_step{}", "x4_p144e_step600", False),
        ("**Stage 8: half the learning rate", "step", "x4_p144g_step{}", "x4_p144f_step600",
         False),
        ("**Stage 9: stage 8 again", "step", "x4_p144h_step{}", "x4_p144g_step600", False),
        ("**Stage 10: a quarter of stage 7's rate", "step", "x4_p144i_step{}", "x4_p144g_step600",
         False),
        ("**Stage 11: noise on every patch", "step", "x4_p144j_step{}", "x4_p144g_step600", True),
    ],
)  # fmt: skip
def test_model_card_checkpoint_tables_are_the_stored_exports(
    heading: str, first_cell: str, key: str, start: str, ships: bool
) -> None:
    trials = json.loads((ROOT / "benchmarks/results/irn_export_trials.json").read_text())
    checked, shipped = 0, None
    for cells in card_table(heading, first_cell)[1:]:
        step = cells[0].split()[0].replace(",", "")
        if not step.isdigit() or len(cells[2].split(" / ")) != 2:
            continue  # a checkpoint that was not kept
        name = key.format(step) if step != "0" else start
        assert_card_scores(cells[2], trials[name], cells)
        checked += 1
        if "(shipped)" in cells[0]:
            shipped = name
    # the table whose model ships marks it, and it is the file shipped now; the others do not
    assert checked >= 3 and (shipped is not None) == ships
    if shipped is not None:
        model = key.split("_")[0]  # x2_stage4_step{} -> x2
        assert trials[shipped]["set14_psnr_y"] == model_info(model)["metadata"]["set14_psnr_y"]


# Tables of the model card: (text before the table, its first header cell) → for each row (its
# first cell, or that cell's first word), the export trial and the model in the colour JSON
CARD_TABLES: dict[tuple[str, str], dict[str, tuple[str, str | None]]] = {
    ("**A larger LR-guidance weight at ×2", "λ_fit"): {
        "4": ("x2_stage4_step2000", "shipped x2"),
        "8": ("x2_stage4_fit8_step1000", "x2_noise_fit8_step1000.safetensors"),
        "16": ("x2_stage4_fit16_step1000", "x2_noise_fit16_step1000.safetensors"),
        "24": ("x2_stage4_fit24_step1000", "x2_noise_fit24_step1000.safetensors"),
        "32": ("x2_stage4_fit32_step1000", "x2_noise_fit32_step1000.safetensors"),
    },
    ("**A larger LR-guidance weight at ×4", "λ_fit"): {
        "16": ("x4_noise_step500", "x4_noise_step500.safetensors"),
        "64": ("x4_noise_fit64_step1000", "x4_noise_fit64_step1000.safetensors"),
    },
    ("### The ×4 fine-tune on 144² patches", "step"): {
        "0": ("x4_noise_step500", "x4_noise_step500.safetensors"),
        "400": ("x4_p144_step400", "x4_p144_step400.safetensors"),
        "600": ("x4_p144_step600", "x4_p144_step600.safetensors"),
        "800": ("x4_p144_step800", "x4_p144_step800.safetensors"),
    },
    ("**Stage 3: 800 more steps on 144² patches", "step"): {
        "0": ("x4_p144_step800", "x4_p144_step800.safetensors"),
        "400": ("x4_p144b_step400", "x4_p144b_step400.safetensors"),
        "800": ("x4_p144b_step800", "x4_p144b_step800.safetensors"),
    },
    ("**Stage 4: a longer constant rate", "step"): {
        "0": ("x4_p144b_step800", "x4_p144b_step800.safetensors"),
        "800": ("x4_p144c_step800", "x4_p144c_step800.safetensors"),
        "1,200": ("x4_p144c_step1200", "x4_p144c_step1200.safetensors"),
        "1,600": ("x4_p144c_step1600", "x4_p144c_step1600.safetensors"),
    },
    ("**Stage 5: the paper's batch of 16", "step"): {
        "0": ("x4_p144c_step1600", "x4_p144c_step1600.safetensors"),
        "150": ("x4_p144d_step150", None),
        "300": ("x4_p144d_step300", "x4_p144d_step300.safetensors"),
        "450": ("x4_p144d_step450", "x4_p144d_step450.safetensors"),
        "600": ("x4_p144d_step600", "x4_p144d_step600.safetensors"),
    },
    ("**Stage 6: a warm-up", "step"): {
        "0": ("x4_p144d_step600", "x4_p144d_step600.safetensors"),
        "150": ("x4_p144e_step150", None),
        "300": ("x4_p144e_step300", "x4_p144e_step300.safetensors"),
        "450": ("x4_p144e_step450", "x4_p144e_step450.safetensors"),
        "600": ("x4_p144e_step600", "x4_p144e_step600.safetensors"),
    },
    ("**Stage 7: stage 6 again", "step"): {
        "0": ("x4_p144e_step600", "x4_p144e_step600.safetensors"),
        "150": ("x4_p144f_step150", None),
        "450": ("x4_p144f_step450", "x4_p144f_step450.safetensors"),
        "600": ("x4_p144f_step600", "x4_p144f_step600.safetensors"),
    },
    ("**Stage 8: half the learning rate", "step"): {
        "0": ("x4_p144f_step600", "x4_p144f_step600.safetensors"),
        "450": ("x4_p144g_step450", None),
        "600": ("x4_p144g_step600", "x4_p144g_step600.safetensors"),
    },
    ("**Stage 9: stage 8 again", "step"): {
        "0": ("x4_p144g_step600", "x4_p144g_step600.safetensors"),
        "450": ("x4_p144h_step450", None),
        "600": ("x4_p144h_step600", "x4_p144h_step600.safetensors"),
    },
    ("**Stage 10: a quarter of stage 7's rate", "step"): {
        "0": ("x4_p144g_step600", "x4_p144g_step600.safetensors"),
        "450": ("x4_p144i_step450", None),
        "600": ("x4_p144i_step600", "x4_p144i_step600.safetensors"),
    },
    ("**Stage 11: noise on every patch", "step"): {
        "0": ("x4_p144g_step600", "x4_p144g_step600.safetensors"),
        "450": ("x4_p144j_step450", None),
        "600": ("x4_p144j_step600", "shipped x4"),
    },
    ("**The λ_fit = 24 model trained on", "step"): {
        f"{k},000": (f"x2_stage4_fit24_long_step{k}000", f"x2_fit24_long_step{k}000.safetensors")
        for k in range(1, 5)
    },
    ("**Stage 2 to the end of its schedule", "stage 2 step"): {
        "1,000": ("x2_stage2_step1000", "x2_recolour_step1000.pt"),
        "2,500": ("x2_stage2_step2500", "x2_recolour_step2500.pt"),
        "4,000": ("x2_stage2_step4000", "x2_recolour_step4000.pt"),
    },
    ("### ×4: two earlier fine-tunes", "run"): {
        "the 5,000-step `x4`": ("x4_5000_steps", None),
        "prescale": ("x4_prescale_step2500", None),
        "the paper's schedule, compressed": ("x4_schedule_step3000", None),
    },
}


@pytest.mark.parametrize(("heading", "first_cell"), sorted(CARD_TABLES))
def test_model_card_tables_are_the_stored_measurements(heading: str, first_cell: str) -> None:
    trials = json.loads((ROOT / "benchmarks/results/irn_export_trials.json").read_text())
    colour = json.loads((ROOT / "benchmarks/results/irn_colour_cpu.json").read_text())
    header, *body = card_table(heading, first_cell)
    scores = next(i for i, name in enumerate(header) if name.endswith("Y-PSNR"))
    lr = next((i for i, name in enumerate(header) if name.startswith("LR RGB PSNR:")), None)
    expected = CARD_TABLES[heading, first_cell]
    rows = {cells[0] if cells[0] in expected else cells[0].split()[0]: cells for cells in body}
    assert set(rows) == set(expected)
    for label, (trial, model) in expected.items():
        cells = rows[label]
        assert_card_scores(cells[scores], trials[trial], cells)
        if lr is not None and model is not None:
            measured = colour[trial.split("_")[0]][model]
            values = [float(v) for v in cells[lr].split(" / ")]
            stored = [measured[part]["lr_psnr_rgb"] for part in ("set5", "set14", "demo")]
            assert values == pytest.approx(stored, abs=0.006), cells
        if "(shipped)" in cells[0]:
            shipped = model_info(trial.split("_")[0])["metadata"]
            assert trials[trial]["set14_psnr_y"] == shipped["set14_psnr_y"], cells


def test_x2_tradeoff_figure_plots_the_card_tables_models() -> None:
    figure = figure_script("irn_x2_tradeoff")
    data = figure.points()  # raises if a model is missing from the stored results
    _, shipped_y = data["LR-guidance weight λ_fit"]["4 (shipped)"]
    assert shipped_y == model_info("x2")["metadata"]["set14_psnr_y"]
    assert (ROOT / "docs" / "assets" / "irn_x2_tradeoff.png").is_file()
    # every model of the card's two x2 LR-weight tables is a point, and only those
    plotted = {pair for members in figure.SERIES.values() for pair in members.values()}
    tables = ("**A larger LR-guidance weight at ×2", "**The λ_fit = 24 model trained on")
    in_card = {
        pair
        for (heading, _), rows in CARD_TABLES.items()
        if heading in tables
        for pair in rows.values()
    }
    assert plotted == in_card
    # as the card says: of the sweep only lambda_fit 24 meets both Set14 goals, and so does
    # every step of the run trained on from it
    for members in data.values():
        for label, (lr, y) in members.items():
            assert (lr >= figure.GOAL_LR and y >= figure.GOAL_Y) == (
                label not in {"4 (shipped)", "8", "16", "32"}
            ), label


def test_x4_curve_figure_ends_at_the_shipped_model() -> None:
    figure = figure_script("irn_x4_curve")
    shipped = model_info("x4")["metadata"]
    points = figure.exported()  # raises if a model of the line is missing from the stored results
    for part in ("set5", "set14"):
        steps, psnr = points[part][-1]
        assert (steps, psnr) == (shipped["steps"], shipped[f"{part}_psnr_y"]), part
        assert [s for s, _ in points[part]] == sorted(figure.LINE)
    curve = figure.validation()
    assert [s for s, _ in curve] == sorted(s for s, _ in curve)  # one run after the other
    assert curve[0][0] == figure.START and curve[-1][0] >= shipped["steps"]
    first, last = figure.patch_144()
    assert figure.START < first < last <= curve[-1][0]
    starts = figure.stage_starts()  # each stage starts from a model of the line
    assert min(starts) == figure.START and set(starts) <= set(figure.LINE)
    assert (ROOT / "docs" / "assets" / "irn_x4_curve.png").is_file()


def test_model_card_x8_sentence_is_the_stored_measurement() -> None:
    """The card's reason for shipping no x8 states the stored step times, their ratio to the
    recipe's length, the x8's size and that the x8 checks against the original code passed."""
    from flowlearn import IRN

    steps = json.loads((ROOT / "benchmarks/results/irn_x8_step_time_cpu.json").read_text())
    checks = json.loads((ROOT / "benchmarks/results/irn_speed_time_x8_cpu.json").read_text())
    card = (ROOT / "docs" / "model-card.md").read_text()
    bullet = " ".join(card[card.index("* No ×8 model ships.") :].split("\n\n")[0].split())
    for key in ("x8", "x4"):
        t = steps[key]["seconds_cumulative"]
        assert f"{(t[-1] - t[1]) / (len(t) - 2):.2f} s" in bullet, key
    days = steps["recipe_steps"] * steps["x8"]["step_s"] / 86400
    assert f"about {days:.0f} days" in bullet and f"{steps['recipe_steps']:,} steps" in bullet
    assert f"{sum(p.numel() for p in IRN(8).parameters()):,} weights" in bullet
    worst = max(v for mode in checks["checks"]["x8"]["float64"].values() for v in mode.values())
    assert worst < 1e-14 and "below 1e-14" in bullet
