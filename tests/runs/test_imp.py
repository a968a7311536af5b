"""The IMP loop: pruning schedule, rewinding, regularised distance, bit-exact resume from a level checkpoint."""

import io

import pytest
import torch

from lth_tune.config import ExperimentConfig
from lth_tune.pruning import masks
from lth_tune.runs import IMPRun
from lth_tune.seeding import derived_seed


def config(data_root, **over):
    raw = {
        "seed": 1,
        "data": {"dataset": "mnist1d", "root": data_root, "train_subset": 500, "val_fraction": 0.2},
        "model": {"name": "mlp", "widths": [24]},
        "train": {"epochs": 2, "lr": 0.05, "batch_size": 50},
        "pruning": {"levels": 3, "fraction": 0.2},
    }
    return ExperimentConfig.model_validate(raw).with_params(over)


def test_levels_follow_the_pruning_schedule(data_root):
    run = IMPRun(config(data_root), device="cpu")
    hist = run.run()
    assert [h["level"] for h in hist] == [0, 1, 2, 3]
    prunable = sum(m.numel() for m in masks(run.model).values())
    remaining = prunable
    for h in hist[1:]:
        remaining -= round(0.2 * remaining)
        assert h["density"] == pytest.approx(remaining / prunable)
    assert hist[0]["test_acc_gap"] == 0.0
    assert hist[3]["test_acc_gap"] == pytest.approx(hist[0]["test_acc"] - hist[3]["test_acc"])


def test_rewind_to_init_restores_initial_weights_under_the_new_mask(data_root):
    run = IMPRun(config(data_root), device="cpu")
    run.next_level()
    trained = {n: p.detach().clone() for n, p in run.model.named_parameters()}
    from lth_tune.pruning import prune_step, rewind

    prune_step(run.model, 0.2)
    rewind(run.model, run.rewind_snapshot)
    for name, p in run.model.named_parameters():
        torch.testing.assert_close(p.detach(), run.theta_init[name])
        assert not torch.equal(p.detach(), trained[name])


def test_rewind_to_iteration_k_uses_weights_after_k_steps(data_root):
    k = 3
    run = IMPRun(config(data_root, **{"pruning.rewind_iteration": k}), device="cpu")
    run.next_level()
    ref = IMPRun(config(data_root, **{"pruning.rewind_iteration": k, "train.epochs": 1}), device="cpu")
    # train a fresh copy for exactly k iterations with the same data order: it must equal the snapshot
    from lth_tune.seeding import generator
    from lth_tune.training import Regularizer, make_stepper, train_epochs

    stepper = make_stepper("sgd", ref.model, lr=0.05, momentum=0.9)

    class Stop(Exception):
        pass

    def stop_at_k(i):
        if i == k:
            raise Stop

    with pytest.raises(Stop):
        train_epochs(ref.model, ref.data.train, stepper, epochs=1, batch_size=50,
                     generator=generator(1, "order", 0), regularizer=Regularizer("none", 0.0), on_iteration=stop_at_k)
    params = dict(ref.model.named_parameters())
    for name, value in run.rewind_snapshot.items():
        if name in params:
            torch.testing.assert_close(value, params[name].detach())
    assert not torch.equal(run.rewind_snapshot["fc.bias"], run.theta_init["fc.bias"])


def test_l2_init_keeps_tickets_closer_to_init(data_root):
    free = IMPRun(config(data_root, **{"pruning.levels": 0, "train.lr": 0.2}), device="cpu").run()[0]
    held = IMPRun(config(data_root, **{"pruning.levels": 0, "train.lr": 0.2, "regularizer.kind": "l2_init",
                                       "regularizer.lam": 0.3}), device="cpu").run()[0]
    assert held["dist_init"] < 0.5 * free["dist_init"]


def test_resume_from_a_level_checkpoint_is_bit_exact(data_root):
    cfg = config(data_root, **{"train.optimizer": "nvrm", "train.nvrm_b": 0.01, "pruning.criterion": "random"})
    full = IMPRun(cfg, device="cpu").run()
    first = IMPRun(cfg, device="cpu")
    first.next_level()
    first.next_level()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = IMPRun(cfg, device="cpu")
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    rest = resumed.run()

    def strip(hist):
        return [{k: v for k, v in h.items() if k != "time_s"} for h in hist]

    assert len(rest) == len(full) == 4
    assert strip(rest) == strip(full)  # levels 2, 3 recomputed after the resume, bit for bit


def test_checkpoint_from_another_config_is_refused(data_root):
    run = IMPRun(config(data_root), device="cpu")
    state = run.state_dict()
    other = IMPRun(config(data_root, **{"train.lr": 0.01}), device="cpu")
    with pytest.raises(ValueError, match="different experiment"):
        other.load_state_dict(state)


def test_derived_seeds_are_stable_and_distinct():
    assert derived_seed(0, "order", 1) == derived_seed(0, "order", 1)
    assert len({derived_seed(0, "order", i) for i in range(100)}) == 100
    assert derived_seed(0, "order", 1) != derived_seed(1, "order", 1)


def test_rewind_iteration_beyond_one_level_is_refused_before_training(data_root):
    # 400 training examples / batch 50 × 2 epochs = 16 iterations per level
    with pytest.raises(ValueError, match="rewind_iteration=17 exceeds the 16 iterations"):
        IMPRun(config(data_root, **{"pruning.rewind_iteration": 17}), device="cpu")
    IMPRun(config(data_root, **{"pruning.rewind_iteration": 16}), device="cpu").next_level()


# ---------------------------------------------------------------------------------------- controls


def _layer_counts(mask_dict):
    return {n: int(m.sum()) for n, m in mask_dict.items()}


def test_controls_run_before_their_level_with_the_tickets_mask_and_density(data_root, monkeypatch):
    cfg = config(data_root, **{"controls.kinds": ["reinit", "random_prune"], "controls.levels": [2, 3]})
    run = IMPRun(cfg, device="cpu")
    assert run.plan == [(0, "ticket"), (1, "ticket"), (2, "reinit"), (2, "random_prune"), (2, "ticket"),
                        (3, "reinit"), (3, "random_prune"), (3, "ticket")]
    trained = {}  # the mask and first weights each training starts from, by branch and level
    real_train = IMPRun._train

    def spy(self, model, theta_init, level, tag="ticket"):
        from lth_tune.pruning import mask_state, trainable_parameters

        first = trainable_parameters(model)[0].param.detach().clone()
        trained[(tag, level)] = (mask_state(model), first, {k: v.clone() for k, v in theta_init.items()})
        return real_train(self, model, theta_init, level, tag)

    monkeypatch.setattr(IMPRun, "_train", spy)
    hist = run.run()
    assert [(h["level"], h["branch"]) for h in hist] == run.plan
    ticket_init = run.theta_init[next(iter(run.theta_init))]
    for level in (2, 3):
        ticket_mask, ticket_w, _ = trained[("ticket", level)]
        reinit_mask, reinit_w, reinit_theta0 = trained[("reinit", level)]
        rand_mask, rand_w, rand_theta0 = trained[("random_prune", level)]
        # reinit: exactly the ticket's mask, on weights that are not the ticket's initialisation
        assert all(torch.equal(reinit_mask[n], ticket_mask[n]) for n in ticket_mask)
        assert not torch.equal(reinit_w, ticket_init)
        # its l2_init reference is its own initialisation
        assert torch.equal(next(iter(reinit_theta0.values())), reinit_w)
        # random_prune: the same per-layer counts, other positions, from the ticket's rewind point (θ_init)
        assert _layer_counts(rand_mask) == _layer_counts(ticket_mask)
        assert any(not torch.equal(rand_mask[n], ticket_mask[n]) for n in ticket_mask)
        assert torch.equal(rand_w, ticket_w) and torch.equal(ticket_w, ticket_init)
        assert torch.equal(next(iter(rand_theta0.values())), ticket_init)
    # every row at a level reports the same density; the controls' gap is relative to the dense ticket
    for h in hist:
        same = [g for g in hist if g["level"] == h["level"]]
        assert all(g["density"] == pytest.approx(h["density"]) for g in same)
        assert h["test_acc_gap"] == pytest.approx(hist[0]["test_acc"] - h["test_acc"])


def test_controls_leave_the_ticket_unchanged(data_root):
    plain = IMPRun(config(data_root), device="cpu").run()
    with_controls = IMPRun(config(data_root, **{"controls.kinds": ["reinit", "random_prune"],
                                                "controls.levels": "all"}), device="cpu").run()

    def tickets(hist):
        return [{k: v for k, v in h.items() if k != "time_s"} for h in hist if h["branch"] == "ticket"]

    assert tickets(with_controls) == tickets(plain)


def test_resume_between_a_control_and_its_ticket_is_bit_exact(data_root):
    cfg = config(data_root, **{"controls.kinds": ["random_prune", "reinit"], "controls.levels": "last",
                               "train.optimizer": "nvrm", "train.nvrm_b": 0.01})
    full = IMPRun(cfg, device="cpu").run()
    first = IMPRun(cfg, device="cpu")
    for _ in range(4):  # levels 0-2 and the random_prune control of level 3
        first.step()
    assert first.history[-1]["branch"] == "random_prune"
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = IMPRun(cfg, device="cpu")
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    rest = resumed.run()
    strip = lambda hist: [{k: v for k, v in h.items() if k != "time_s"} for h in hist]
    assert strip(rest) == strip(full)


def test_control_levels_exclude_the_dense_level():
    with pytest.raises(ValueError, match="controls.levels must be ≥ 1"):
        ExperimentConfig.model_validate({"controls": {"kinds": ["reinit"], "levels": [0, 2]}})


# ---------------------------------------------------------------------------------------- instability


def test_instability_reports_barriers_from_a_second_copy(data_root):
    import json

    cfg = config(data_root, **{"instability.levels": [0, 3], "instability.points": 5})
    hist = IMPRun(cfg, device="cpu").run()
    for h in hist:
        if h["level"] in (0, 3):
            between, path = json.loads(h["instability_errors"]), json.loads(h["init_path_errors"])
            assert len(between) == len(path) == 5
            # endpoints: the ticket's own test error at α = 0 (between copies) and α = 1 (from its start)
            assert between[0] == pytest.approx(1 - h["test_acc"]) and path[-1] == pytest.approx(1 - h["test_acc"])
            assert h["instability_barrier"] == pytest.approx(max(between) - (between[0] + between[-1]) / 2)
            assert h["instability_barrier"] >= 0  # the maximum is at least the mean of the endpoints
            assert h["instability_distance"] > 0  # another data order moved the second copy elsewhere
        else:
            assert "instability_barrier" not in h
    # the ticket itself is unchanged by the measurement
    plain = IMPRun(config(data_root), device="cpu").run()
    assert [h["test_acc"] for h in hist] == [h["test_acc"] for h in plain]


# ---------------------------------------------------------------------------------------- checkpoints


def test_checkpoints_are_compact_and_check_the_rebuilt_initialisation(data_root):
    cfg = config(data_root, **{"flatness.levels": [1], "pruning.levels": 3})
    run = IMPRun(cfg, device="cpu")
    run.step()
    run.step()
    state = run.state_dict()
    assert all(m.dtype == torch.bool for m in state["masks"].values())
    assert "theta_init" not in state and state["rewind"] is None  # rebuilt from the seed
    buf = io.BytesIO()
    torch.save(state, buf)
    params = sum(p.numel() for p in run.model.parameters())
    assert buf.tell() < 6 * params + 20_000  # 4 bytes a weight + 1 a mask (+ history and pickling)
    assert run.worth_keeping()  # level 1 was declared for flatness
    run.step()
    assert not run.worth_keeping()  # level 2: nothing declared, not the last
    tampered = dict(state, theta_init_digest="0" * 64)
    with pytest.raises(ValueError, match="initialisation rebuilt from seed"):
        IMPRun(cfg, device="cpu").load_state_dict(tampered)
