"""PlanBatchSampler and PlanLR as a user drives them: DataLoader, resume, ranks, optimizers."""

from __future__ import annotations

import io
import warnings
from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

import harness


def _plan(n=100, batch=8, epochs=5, milestones=(2, 4), factor=2.0, drop_last=True, **kw):
    base = harness.BaseSchedule(epochs=epochs, milestones=milestones, factor=factor)
    kw.setdefault("realization", "batch")
    return harness.realize(
        base, lr=0.1, batch_size=batch, momentum=0.9, train_size=n, drop_last=drop_last, **kw
    )


def _epochs(sampler: harness.PlanBatchSampler) -> list[list[list[int]]]:
    out = []
    for epoch in range(sampler.plan.epochs):
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


def _plan_or_none(**kw):
    """A plan, or None where the schedule algebra refuses the combination (a batch larger
    than the training set, a milestone at or after the last epoch)."""
    try:
        return _plan(**kw)
    except harness.ScheduleError:
        return None


plans = st.builds(
    _plan_or_none,
    n=st.integers(1, 120),
    batch=st.integers(1, 16),
    epochs=st.integers(1, 6),
    milestones=st.sampled_from([(), (1,), (1, 3)]),
    factor=st.sampled_from([2.0, 3.0]),
    drop_last=st.booleans(),
    realization=st.sampled_from(["lr", "batch"]),
).filter(lambda p: p is not None and all(ph.updates for ph in p.phases))


@settings(max_examples=60, deadline=None)
@given(plan=plans, seed=st.integers(0, 2**32))
def test_each_epoch_uses_every_index_at_most_once_with_the_planned_sizes(plan, seed):
    for epoch, batches in enumerate(_epochs(harness.PlanBatchSampler(plan, seed=seed))):
        batch_size = plan.phase_at(epoch).batch_size
        per_epoch = harness.updates_per_epoch(plan.train_size, batch_size, plan.drop_last)
        assert len(batches) == per_epoch
        sizes = [len(b) for b in batches]
        assert all(s == batch_size for s in sizes[:-1])
        flat = [i for b in batches for i in b]
        assert max(Counter(flat).values(), default=1) == 1
        assert all(0 <= i < plan.train_size for i in flat)
        if plan.drop_last:
            assert sizes[-1:] in ([], [batch_size])
        else:
            assert sorted(flat) == list(range(plan.train_size))


@settings(max_examples=60, deadline=None)
@given(plan=plans, seed=st.integers(0, 100), cut=st.integers(0, 10_000))
def test_resume_from_a_state_dict_equals_an_uninterrupted_run(plan, seed, cut):
    whole = [b for epoch in _epochs(harness.PlanBatchSampler(plan, seed=seed)) for b in epoch]
    cut = cut % (len(whole) + 1)
    first = harness.PlanBatchSampler(plan, seed=seed)
    taken: list[list[int]] = []
    while len(taken) < cut:
        for batch in first:
            taken.append(batch)
            if len(taken) == cut:
                break
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    second = harness.PlanBatchSampler(plan, seed=seed)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    rest = [b for epoch in range(second.epoch, plan.epochs) for b in _set_and_list(second, epoch)]
    assert taken + rest == whole
    sought = harness.PlanBatchSampler(plan, seed=seed)
    sought.seek(cut)
    assert sought.state_dict() == first.state_dict()


def _set_and_list(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


@settings(max_examples=40, deadline=None)
@given(
    world=st.sampled_from([1, 2, 4]),
    batch=st.sampled_from([4, 8, 12]),
    n=st.integers(24, 100),
    seed=st.integers(0, 100),
)
def test_ranks_partition_each_global_batch_in_order(world, batch, n, seed):
    plan = _plan(n=n, batch=batch, epochs=4, milestones=(2,))
    whole = _epochs(harness.PlanBatchSampler(plan, seed=seed))
    ranks = [
        _epochs(harness.PlanBatchSampler(plan, seed=seed, rank=r, world_size=world))
        for r in range(world)
    ]
    for epoch, batches in enumerate(whole):
        for k, global_batch in enumerate(batches):
            parts = [ranks[r][epoch][k] for r in range(world)]
            assert [i for part in parts for i in part] == global_batch
            assert {len(p) for p in parts} == {len(global_batch) // world}


def test_two_ranks_in_the_middle_of_an_epoch():
    plan = _plan(n=100, batch=8, epochs=3, milestones=(1,))
    samplers = [harness.PlanBatchSampler(plan, seed=7, rank=r, world_size=2) for r in (0, 1)]
    for s in samplers:
        s.seek(harness.at_epoch(plan, 1).step + 2)
    first = [next(iter(s)) for s in samplers]
    reference = harness.PlanBatchSampler(plan, seed=7)
    reference.load_state_dict(samplers[0].state_dict() | {"batch": 2, "epoch": 1})
    assert first[0] + first[1] == next(iter(reference))
    assert len(first[0]) == 8  # 16 examples per global batch in epoch 1


def test_a_batch_that_ranks_cannot_share_equally_is_a_clear_error():
    with pytest.raises(ValueError, match="does not split into 3 equal rank batches"):
        harness.PlanBatchSampler(_plan(batch=8), world_size=3)
    with pytest.raises(ValueError, match="drop_last=True"):
        harness.PlanBatchSampler(_plan(n=101, batch=8, drop_last=False), world_size=2)
    with pytest.raises(ValueError, match="rank"):
        harness.PlanBatchSampler(_plan(), rank=2, world_size=2)
    # A plan whose batch outgrows the data set is refused before a sampler sees it.
    with pytest.raises(ValueError, match="exceeds the training set"):
        harness.PlanBatchSampler(_plan(n=20, batch=8, milestones=(2, 4), factor=2.0))


def test_a_state_from_another_seed_or_plan_is_refused():
    state = harness.PlanBatchSampler(_plan(), seed=1).state_dict()
    with pytest.raises(ValueError, match="seed"):
        harness.PlanBatchSampler(_plan(), seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="updates"):
        harness.PlanBatchSampler(_plan(batch=4), seed=1).load_state_dict(state)


def test_the_order_depends_only_on_seed_and_epoch_not_on_the_schedule():
    by_lr = harness.PlanBatchSampler(_plan(realization="lr"), seed=3)
    by_batch = harness.PlanBatchSampler(_plan(realization="batch"), seed=3)
    by_lr.set_epoch(3)
    by_batch.set_epoch(3)
    flat = [i for b in by_lr for i in b]
    assert [i for b in by_batch for i in b] == flat[: len(flat) // 32 * 32]
    by_lr.set_epoch(4)
    assert [i for b in by_lr for i in b] != flat


def test_dataloader_walks_the_whole_plan_with_or_without_set_epoch():
    plan = _plan(n=64, batch=4, epochs=4, milestones=(1, 2), factor=2.0)
    data = TensorDataset(torch.arange(64))
    sampler = harness.PlanBatchSampler(plan, seed=0)
    loader = DataLoader(data, batch_sampler=sampler)
    sizes = [[len(x) for (x,) in loader] for _ in range(plan.epochs)]
    assert sizes == [[4] * 16, [8] * 8, [16] * 4, [16] * 4]
    assert list(loader) == [] and len(loader) == 0
    again = harness.PlanBatchSampler(plan, seed=0)
    with_set = [[x.tolist() for (x,) in _loader_epoch(again, data, e)] for e in range(4)]
    fresh = harness.PlanBatchSampler(plan, seed=0)
    without = [[x.tolist() for (x,) in DataLoader(data, batch_sampler=fresh)] for _ in range(4)]
    assert with_set == without


def _loader_epoch(sampler, data, epoch):
    sampler.set_epoch(epoch)
    return DataLoader(data, batch_sampler=sampler)


def test_plan_lr_sets_lr_and_sgd_momentum_each_step_and_resumes():
    plan = _plan(n=64, batch=8, epochs=4, milestones=(1, 2), realization="hybrid", batch_drops=1)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=5.0, momentum=0.5)
    scheduler = harness.PlanLR(optimizer, plan)
    seen = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(plan.updates):
            group = optimizer.param_groups[0]
            seen.append((group["lr"], group["momentum"]))
            optimizer.step()
            scheduler.step()
    expected = [harness.at_step(plan, s) for s in range(plan.updates)]
    assert seen == [(h.lr, h.momentum) for h in expected]
    assert optimizer.param_groups[0]["lr"] == expected[-1].lr  # stays put after the plan

    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    other = harness.PlanLR(torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.1), plan)
    other.load_state_dict(state)
    assert other.last_epoch == plan.updates


def test_plan_lr_leaves_adams_betas_alone():
    plan = _plan(realization="lr")
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.8, 0.99))
    scheduler = harness.PlanLR(optimizer, plan)
    for _ in range(harness.at_epoch(plan, 2).step):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.99)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 2)


def _walk(plan, *, seed=0, rank=0, world=1, workers=0, state=None, stop=None):
    """(steps trained as index lists, sampler, state saved with steps_done) of a plain loop
    over a DataLoader with `workers` processes, resumed from `state`, stopped after `stop`."""
    sampler = harness.PlanBatchSampler(plan, seed=seed, rank=rank, world_size=world)
    if state is not None:
        sampler.load_state_dict(state)
    steps = sampler.handed_out()  # the optimizer steps taken before this process
    loader = DataLoader(TensorDataset(torch.arange(plan.train_size)), batch_sampler=sampler,
                        num_workers=workers)  # fmt: skip
    taken: list[list[int]] = []
    for _epoch in range(sampler.epoch, plan.epochs):
        for (x,) in loader:
            taken.append(x.tolist())
            steps += 1
            if stop is not None and len(taken) == stop:
                return taken, sampler, sampler.state_dict(steps_done=steps)
    return taken, sampler, sampler.state_dict(steps_done=steps)


def test_resume_with_dataloader_workers_loses_and_repeats_no_step():
    plan = _plan(n=96, batch=8, epochs=3, milestones=(1, 2))
    whole, _, _ = _walk(plan)
    assert len(whole) == plan.updates == 12 + 6 + 3
    for cut in (5, 12, 14):  # mid-epoch, an epoch's end, mid-epoch with the queue past its end
        first, sampler, state = _walk(plan, workers=2, stop=cut)
        # The workers fetched ahead of training (within the epoch the loop is in).
        assert sampler.handed_out() > cut or cut == plan.updates_before(1)
        with pytest.raises(ValueError, match=r"2 workers.*steps_done"):
            sampler.state_dict()
        resumed = harness.PlanBatchSampler(plan)
        resumed.load_state_dict(state)
        assert resumed.handed_out() == cut == state["step"]
        rest, _, end = _walk(plan, workers=2, state=state)
        assert first + rest == whole, cut
        assert [len(b) for b in first + rest] == [
            harness.at_step(plan, s).batch_size for s in range(plan.updates)
        ]
        assert end["step"] == plan.updates


def test_two_ranks_with_workers_resume_their_shares_of_each_global_batch():
    plan = _plan(n=96, batch=8, epochs=3, milestones=(1, 2))
    whole, _, _ = _walk(plan)
    shares = []
    for rank in (0, 1):
        first, _, state = _walk(plan, rank=rank, world=2, workers=2, stop=7)
        rest, _, _ = _walk(plan, rank=rank, world=2, workers=2, state=state)
        shares.append(first + rest)
    assert [a + b for a, b in zip(*shares)] == whole


def test_steps_done_past_the_batches_handed_out_is_refused_and_len_counts_the_whole_epoch():
    plan = _plan(n=96, batch=8, epochs=3, milestones=(1, 2))
    sampler = harness.PlanBatchSampler(plan)
    with pytest.raises(ValueError, match=r"steps_done=1, but the sampler has handed out 0"):
        sampler.state_dict(steps_done=1)
    sampler.seek(14)  # epoch 1, batch 2 of 6
    assert len(sampler) == 6 and len(list(sampler)) == 4
    # len() stays the iterated epoch's (Lightning asks after workers drew all of it) until
    # set_epoch moves on.
    assert (sampler.epoch, len(sampler)) == (2, 6)
    sampler.set_epoch(2)
    assert len(sampler) == 3
    optimizer = torch.optim.SGD(torch.nn.Linear(1, 1).parameters(), lr=1.0, momentum=0.0)
    scheduler = harness.PlanLR(optimizer, plan)
    assert scheduler.steps_done == 0
    optimizer.step()
    scheduler.step()
    assert scheduler.steps_done == 1


def test_torchrun_two_ranks_with_workers_stop_and_resume_at_the_next_step(tmp_path):
    """Real processes: torchrun, DDP on gloo, 2 DataLoader workers per rank, rank 0's
    checkpoint (saved with steps_done) resumes both ranks."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.plain_loop_job import SEED, job_plan

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))

    def torchrun(*args: str) -> list[list[dict]]:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += ["--nproc_per_node=2", str(REPO / "tests" / "plain_loop_job.py"), str(tmp_path)]
        done = subprocess.run([*cmd, *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return [json.loads((tmp_path / f"{args[0]}-rank{r}.json").read_text()) for r in (0, 1)]

    plan = job_plan()
    assert [ph.updates for ph in plan.phases] == [12, 6, 6]
    first = torchrun("first", "9")  # mid-epoch 0, the workers' queue ahead of it
    rest = torchrun("rest")
    whole = harness.PlanBatchSampler(plan, seed=SEED)
    batches = [b for epoch in range(plan.epochs) for b in _set_and_list(whole, epoch)]
    ranks = [first[r] + rest[r] for r in (0, 1)]
    lrs = [harness.at_step(plan, k).lr for k in range(plan.updates)]
    assert len(set(lrs)) == 2  # epoch 2's drop is made by the lr
    for steps in ranks:
        assert [s["step"] for s in steps] == list(range(plan.updates))
        assert [s["lr"] for s in steps] == lrs
    assert [a["index"] + b["index"] for a, b in zip(*ranks)] == batches
