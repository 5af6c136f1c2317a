"""The training loop's hooks: step order, gradients before the step, per-sample correctness."""

import torch
from torch import nn

from lotterypools.data.datasets import BatchSource, Split
from lotterypools.training.loop import CorrectnessRecorder, TrainingHook, build_optimizer, train_one_epoch

CPU = torch.device("cpu")


def tiny_split(n: int = 20) -> Split:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=generator)
    return Split(images, torch.randint(0, 3, (n,), generator=generator))


class Spy(TrainingHook):
    def __init__(self):
        self.events, self.grad_norms = [], []

    def after_backward(self, step):
        self.events.append(("backward", step.step))
        self.grad_norms.append(float(step.model.weight.grad.norm()))

    def after_step(self, step):
        self.events.append(("step", step.step))


def test_hooks_run_in_order_with_gradients_and_global_step_numbers():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    model.weight = model[1].weight
    spy = Spy()
    source = BatchSource(tiny_split(), 8, CPU, shuffle=True)
    train_one_epoch(model, source, build_optimizer(model, 0.1, 0.9, 0.0), CPU, hooks=[spy], first_step=5)
    assert spy.events == [("backward", 5), ("step", 5), ("backward", 6), ("step", 6), ("backward", 7), ("step", 7)]
    assert all(norm > 0 for norm in spy.grad_norms)


def test_after_step_hook_that_zeroes_weights_is_honoured():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

    class ZeroFirstRow(TrainingHook):
        def after_step(self, step):
            with torch.no_grad():
                step.model[1].weight[0].zero_()

    train_one_epoch(model, BatchSource(tiny_split(), 8, CPU), build_optimizer(model, 0.1, 0.9, 0.0), CPU,
                    hooks=[ZeroFirstRow()])
    assert torch.count_nonzero(model[1].weight[0]) == 0
    assert torch.count_nonzero(model[1].weight[1]) > 0


def test_correctness_recorder_marks_seen_samples_per_epoch():
    split = tiny_split()
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    recorder = CorrectnessRecorder(num_samples=30)  # 10 samples beyond the split are never seen
    source = BatchSource(split, 8, CPU, shuffle=True, with_indices=True)
    optimizer = build_optimizer(model, 0.0, 0.0, 0.0)  # lr 0: predictions stay fixed, so they can be checked
    for epoch in range(2):
        train_one_epoch(model, source.with_seed(epoch), optimizer, CPU, hooks=[recorder], epoch=epoch)
    table = recorder.table
    assert table.shape == (30, 2)
    with torch.no_grad():
        expected = (model(split.images.float() / 255).argmax(1) == split.labels).to(torch.int8)
    assert torch.equal(table[:20, 0], expected) and torch.equal(table[:20, 1], expected)
    assert torch.all(table[20:] == -1)
