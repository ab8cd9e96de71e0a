"""Progress output: a bar redrawn in place on a terminal, plain periodic lines (no carriage return) otherwise."""
from __future__ import annotations

import io

from robult_engine.cli import ProgressPrinter
from robult_engine.events import EpochEnded, Failed, StepEnded


def epoch_event(epoch: int) -> EpochEnded:
    return EpochEnded(epoch=epoch, epochs=2, train_losses={"total": 1.25}, val_metrics={}, val_score=0.5,
                      is_best=epoch == 0, z_norm={}, u_norm={}, rec_error={}, pu_weight_hist=(),
                      pu_weight_edges=(), pu_weight_mean=0.0, pseudo_label_acc=0.0, elapsed_s=2.0 + epoch)


def feed(printer: ProgressPrinter) -> None:
    for epoch in range(2):
        for step in range(5):
            g = epoch * 5 + step + 1
            printer(StepEnded(epoch, step, g, 10, {"total": 1.0 / g}, 1e-3, 0.1 * g))
        printer(epoch_event(epoch))
    printer(Failed("the disk is full", "error"))


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gets_plain_lines():
    out = io.StringIO()  # isatty() is False, as for a CI log or a pipe
    feed(ProgressPrinter(stream=out, interval=0.0))
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("epoch 1 step 1/10 loss 1.0000")
    assert "epoch 1/2  train 1.2500  val score 0.5000 *  (2s)" in lines
    assert "epoch 2/2  train 1.2500  val score 0.5000  (3s)" in lines
    assert lines[-1] == "FAILED: the disk is full"
    assert not any(line.startswith("epoch 2 step 10/10") for line in lines)  # the epoch line says it at once


def test_not_a_terminal_is_throttled():
    out = io.StringIO()
    feed(ProgressPrinter(stream=out))  # default: a step line at most every 30 s
    step_lines = [line for line in out.getvalue().splitlines() if " step " in line]
    assert step_lines == ["epoch 1 step 1/10 loss 1.0000  10.0%  ETA     1s"]


def test_terminal_gets_a_bar_redrawn_in_place():
    out = FakeTerminal()
    printer = ProgressPrinter(stream=out, label="[1/2] ")
    assert printer.tty
    feed(printer)
    text = out.getvalue()
    assert "\r[=" in text and "] [1/2] epoch 1 step 1/10" in text
    assert "\r[1/2] epoch 2/2  train 1.2500" in text
    assert text.endswith("\n[1/2] FAILED: the disk is full\n") and "\n\n" not in text  # no blank line
    # a failure while the bar is on screen starts a new line instead of overwriting the bar
    out = FakeTerminal()
    printer = ProgressPrinter(stream=out)
    printer(StepEnded(0, 0, 1, 10, {"total": 1.0}, 1e-3, 0.1))
    printer(Failed("boom", "error"))
    assert out.getvalue().endswith("ETA     1s   \nFAILED: boom\n")


def test_cli_log_to_a_file_has_no_carriage_return(engine_cli, tmp_path):
    proc = engine_cli("train", "--epochs", "1", "--out", str(tmp_path / "run"), "--dataset", "pid-synth",
                      "--set", "data.synth_n_train=120", "--set", "model.d_h=16", "--set", "model.d_z=8",
                      "--set", "model.d_u=8", "--set", "model.d_hidden=16", "--batch-size", "16",
                      "--label-fraction", "0.1", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "epoch 1/1  train" in proc.stderr
