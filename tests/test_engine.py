"""The training engine's parts: tasks, losses, optimizers, schedules, augmentation, the loop."""

import numpy as np
import pytest
import torch

from edgekit.augment import augment
from edgekit.data import ArraySplit, DataSplits
from edgekit.errors import EdgekitError
from edgekit.loop import evaluate, fit
from edgekit.losses import LOSSES, build_loss
from edgekit.optim import OPTIMIZERS, SCHEDULES, build_optimizer, build_scheduler, param_groups
from edgekit.recipe import load_recipe
from edgekit.runtime.preprocess import image_spec
from edgekit.tasks import TASKS, get_task, list_tasks


def test_classification_task_scores_decodes_and_compares():
    task = get_task("classification")
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5], [0.0, 0.1, 0.2]], np.float32)
    assert task.decode(logits).tolist() == [1, 0, 2]
    assert task.score(logits, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    # Log-probabilities (a model ending in log_softmax) decode the same as logits.
    logp = torch.log_softmax(torch.from_numpy(logits), 1).numpy()
    assert task.score(logp, np.array([1, 0, 0])) == pytest.approx(2 / 3)
    assert task.better(0.9, 0.8) and not task.better(0.8, 0.9) and task.better(0.1, None)
    assert task.worse_by(0.99, 0.98) == pytest.approx(1.0)  # accuracy points
    assert task.format(0.98765) == "98.77%"


def test_per_step_outputs_fit_the_classification_seam():
    """(B, T, K) scores with (B, T) labels, as a character model produces ("hello" -> "ohlol")."""
    task = get_task("classification")
    out = torch.randn(2, 5, 4)
    y = out.argmax(-1)
    flat_out, flat_y = task.loss_view(out, y)
    assert flat_out.shape == (10, 4) and flat_y.shape == (10,)
    assert task.score(out.numpy(), y.numpy()) == 1.0
    assert build_loss("auto", task)(out, y).item() > 0


def test_a_task_where_lower_is_better_plugs_in():
    """The seam a regression task (issue 7) uses: float targets, a metric to minimize."""
    from edgekit.registry import Registry
    from edgekit.tasks import Task

    class Regression(Task):
        name, loss, metric, higher_is_better = "regression-test", "mse", "mse", False

        def score(self, outputs, targets):
            return float(((outputs - targets) ** 2).mean())

    task = Regression()
    assert task.better(0.1, 0.2) and not task.better(0.3, 0.2)
    assert task.worse_by(0.1, 0.3) == pytest.approx(0.2)
    out, y = torch.randn(8, 3), torch.randn(8, 3)
    assert build_loss("auto", task)(out, y).item() == pytest.approx(
        torch.nn.functional.mse_loss(out, y).item())
    assert isinstance(TASKS, Registry) and "classification" in list_tasks()


def test_unknown_task_lists_the_choices():
    with pytest.raises(EdgekitError, match="unknown task 'painting'; expected one of: "
                                           "classification"):
        get_task("painting")


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_trains_a_classifier_step(name):
    task = get_task("classification")
    torch.manual_seed(0)
    out = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    scores = {"nll": torch.log_softmax(out, 1), "bce": torch.sigmoid(out)}.get(name, out)
    loss = build_loss(name, task)(scores, y)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert out.grad is not None and out.grad.abs().sum() > 0


def test_float_losses_one_hot_encode_class_labels():
    task = get_task("classification")
    out = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1])
    assert build_loss("mse", task)(out, y).item() == 0.0
    assert build_loss("l1", task)(out, 1 - y).item() == 1.0


def test_label_smoothing_reaches_cross_entropy_and_nowhere_else():
    task = get_task("classification")
    out, y = torch.tensor([[10.0, -10.0]]), torch.tensor([0])
    assert build_loss("cross_entropy", task, 0.2)(out, y) > build_loss("cross_entropy", task)(
        out, y) + 1
    with pytest.raises(EdgekitError, match="train.label_smoothing applies to cross_entropy"):
        build_loss("mse", task, 0.1)
    with pytest.raises(EdgekitError, match="train.label_smoothing applies to cross_entropy"):
        load_recipe("lenet5", ["train.loss=nll", "train.label_smoothing=0.1"])


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_every_optimizer_takes_a_step(name):
    cfg = load_recipe("lenet5", [f"train.optimizer={name}", "train.lr=0.1"]).train
    model = tiny_model()
    opt = build_optimizer(model, cfg)
    assert type(opt).__name__.lower() == name
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_sgd_momentum_nesterov_and_weight_decay_reach_the_optimizer():
    cfg = load_recipe("lenet5", ["train.optimizer=sgd", "train.momentum=0.8",
                                 "train.nesterov=true", "train.weight_decay=0.01"]).train
    group = build_optimizer(tiny_model(), cfg).param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.8, True, 0.01)
    with pytest.raises(EdgekitError, match="train.nesterov needs train.optimizer=sgd"):
        load_recipe("lenet5", ["train.optimizer=adam", "train.nesterov=true"])


def test_backbone_learning_rate_scale_makes_two_groups():
    cfg = load_recipe("lenet5", ["train.lr=0.01", "train.backbone_lr_scale=0.1"]).train
    model = tiny_model()
    groups = param_groups(model, cfg, head={"2.weight", "2.bias"})
    assert [g["lr"] for g in groups] == [0.01, pytest.approx(0.001)]
    assert [len(g["params"]) for g in groups] == [2, 2]
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(EdgekitError, match="no trainable parameters"):
        param_groups(model, cfg, head=set())


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_schedules_step_per_optimizer_step(schedule):
    cfg = load_recipe("lenet5", [f"train.schedule={schedule}", "train.epochs=4", "train.lr=0.1",
                                 "train.step_size=2", "train.gamma=0.5"]).train
    opt = build_optimizer(tiny_model(), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=5)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched:
            sched.step()
    if schedule == "none":
        assert lrs == [0.1] * 20
    elif schedule == "step":  # halved after 2 epochs of 5 steps
        assert lrs[:10] == [0.1] * 10 and lrs[10:] == [pytest.approx(0.05)] * 10
    elif schedule == "cosine":
        assert lrs[0] == 0.1 and all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    else:  # one-cycle: warm up, peak at lr, anneal well below it
        peak = int(np.argmax(lrs))
        assert 0 < peak < 19 and lrs[peak] == pytest.approx(0.1, rel=0.05) and lrs[-1] < 0.01


def test_augment_shifts_and_flips_within_the_image():
    torch.manual_seed(0)
    x = torch.arange(2 * 1 * 4 * 5, dtype=torch.float32).reshape(2, 1, 4, 5)
    assert augment(x) is x
    flipped = augment(x.repeat(64, 1, 1, 1), flip=True)
    assert {bool(torch.equal(f, o.flip(2))) or bool(torch.equal(f, o))
            for f, o in zip(flipped, x.repeat(64, 1, 1, 1), strict=True)} == {True}
    shifted = augment(x.repeat(64, 1, 1, 1), shift=1)
    assert shifted.shape == (128, 1, 4, 5)
    # Each shifted image is the original translated by at most 1 pixel, border repeated.
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    for s, i in zip(shifted, [0, 1] * 64, strict=True):
        assert any(torch.equal(s[0], padded[i, 0, dy:dy + 4, dx:dx + 5])
                   for dy in range(3) for dx in range(3))
    assert augment(torch.zeros(3, 7), shift=2, flip=True).shape == (3, 7)  # not images


def synthetic_data(n_train=96, n_test=48, seed=0) -> DataSplits:
    """Two classes of 32x32 images: a bright or a dark square, learnable in a few steps."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = rng.integers(0, 2, n)
        x = rng.normal(0, 0.3, (n, 1, 32, 32)).astype(np.float32)
        x[:, :, 8:24, 8:24] += np.where(y == 1, 1.5, -1.5)[:, None, None, None]
        return ArraySplit(x=x, y=y.astype(np.int64))

    return DataSplits(train=split(n_train), test=split(n_test), labels=["dark", "bright"],
                      preprocess=image_spec("L", (32, 32), [0.0], [1.0]))


def test_fit_learns_and_reports_the_task_metric():
    recipe = load_recipe("lenet5", ["train.epochs=3", "train.lr=0.003", "data.batch_size=16",
                                    "train.optimizer=sgd", "train.loss=nll",
                                    "train.grad_clip=1.0", "train.l1=0.0001"])
    data = synthetic_data()
    result = fit(recipe, data, progress=False)
    model, history = result.model, result.history
    assert result.amp is None and result.device == "cpu"  # CPU: no mixed precision
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert set(history[0]) >= {"train_loss", "train_accuracy", "test_loss", "test_accuracy"}
    task = get_task("classification")
    loss_fn = build_loss("cross_entropy", task)
    result = evaluate(model, data.test, 16, task, loss_fn)
    assert result["accuracy"] == history[-1]["test_accuracy"]


def test_early_stopping_keeps_the_best_epoch():
    # lr 0 after the first epoch: nothing improves, so training stops after `early_stop` more.
    recipe = load_recipe("lenet5", ["train.epochs=10", "train.early_stop=2", "train.lr=0.01",
                                    "train.schedule=step", "train.step_size=1",
                                    "train.gamma=1e-9", "data.batch_size=32"])
    result = fit(recipe, synthetic_data(), progress=False)
    model, history = result.model, result.history
    assert len(history) == 3 and result.stopped_early and result.best_epoch == 1
    task = get_task("classification")
    best = max(h["test_accuracy"] for h in history)
    result = evaluate(model, synthetic_data().test, 32, task, build_loss("auto", task))
    assert result["accuracy"] == best


def test_a_diverging_loss_is_one_clear_error():
    recipe = load_recipe("lenet5", ["train.epochs=2", "train.lr=1e30", "train.optimizer=sgd",
                                    "train.schedule=none", "data.batch_size=16"])
    with pytest.raises(EdgekitError, match=r"training diverged at epoch 1.*lower train.lr"):
        fit(recipe, synthetic_data(), progress=False)
