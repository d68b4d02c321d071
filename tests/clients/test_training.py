"""DP training of the enterprise model: what changes, clipping, noise source, reproducibility."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from opacus import PrivacyEngine

from secagg.errors import InvalidParameter
from secagg_clients.data import Record
from secagg_clients.model import EncoderKind, build_model, make_dataset
from secagg_clients.secure_noise import CsprngDPOptimizer, SecurePrivacyEngine
from secagg_clients.trainer import DPConfig, NoiseMode, evaluate, train_private

TINY = EncoderKind.TEST_ONLY_TINY


def _config(**kw: object) -> DPConfig:
    base: dict[str, object] = dict(epochs=1, batch_size=16, noise_multiplier=1.0,
                                   learning_rate=1e-2, noise_mode=NoiseMode.INSECURE_FAST, seed=3)
    base.update(kw)
    return DPConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", [NoiseMode.SECURE, NoiseMode.INSECURE_FAST])
def test_only_adapter_and_head_parameters_change(
    mode: NoiseMode, tokenizer: object, small_records: list[Record]
) -> None:
    model = build_model(encoder=TINY, lora_rank=4)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    seed = 3 if mode is NoiseMode.INSECURE_FAST else None
    train_private(model, make_dataset(small_records, tokenizer), _config(noise_mode=mode, seed=seed),
                  progress=False)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "model must have trainable parameters"
    assert changed == trainable  # every adapter/head tensor moved, nothing frozen did
    assert all("lora_" in n or n.startswith(("head.", "sensor_proj.")) for n in trainable)
    # Opacus's hooks and per-sample buffers are gone: the model is plain again
    assert all(not hasattr(p, "grad_sample") for p in model.parameters())
    assert not any(m._forward_hooks for m in model.modules())


def test_per_sample_gradients_are_exact_and_clipped(
    tokenizer: object, small_records: list[Record]
) -> None:
    model = build_model(encoder=TINY, lora_rank=4)
    with torch.no_grad():  # non-zero LoRA B so the A matrices get gradients too
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    for m in model.modules():  # train mode (Opacus hooks need it) without dropout's randomness
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    reference = copy.deepcopy(model)
    ids, mask, sensors, labels = make_dataset(small_records[:6], tokenizer).tensors
    clip = 1e-3  # far below the typical per-sample norm: clipping must act
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(ids, mask, sensors, labels), batch_size=6)
    engine = PrivacyEngine(accountant="rdp")
    hooks, dp_opt, _ = engine.make_private(module=model, optimizer=opt, data_loader=loader,
                                           noise_multiplier=0.0, max_grad_norm=clip,
                                           wrap_model=False, poisson_sampling=False)
    loss = torch.nn.functional.cross_entropy(model(ids, mask, sensors), labels)
    loss.backward()
    params = [p for p in model.parameters() if p.requires_grad]
    ref_params = [p for p in reference.parameters() if p.requires_grad]
    # Opacus's per-sample gradients equal one backward pass per example (Opacus undoes the mean)
    for i in range(6):
        reference.zero_grad()
        out = reference(ids[i : i + 1], mask[i : i + 1], sensors[i : i + 1])
        torch.nn.functional.cross_entropy(out, labels[i : i + 1]).backward()
        for p, r in zip(params, ref_params, strict=True):
            torch.testing.assert_close(p.grad_sample[i], r.grad, rtol=1e-3, atol=1e-6)
    norms = torch.stack([p.grad_sample.reshape(6, -1).norm(dim=1) for p in params]).norm(dim=0)
    assert bool((norms > clip).all())
    dp_opt.clip_and_accumulate()
    factors = (clip / (norms + 1e-6)).clamp(max=1.0)
    clipped = [torch.einsum("i,i...->i...", factors, p.grad_sample) for p in params]
    clipped_norms = torch.stack([c.reshape(6, -1).norm(dim=1) for c in clipped]).norm(dim=0)
    assert bool((clipped_norms <= clip * (1 + 1e-4)).all())
    for p, c in zip(params, clipped, strict=True):
        torch.testing.assert_close(p.summed_grad, c.sum(dim=0), rtol=1e-5, atol=1e-9)
    hooks.cleanup()


def test_secure_mode_clips_each_example_of_a_batch(
    tokenizer: object, small_records: list[Record]
) -> None:
    """The production engine (CSPRNG noise and sampling) clips exactly as Opacus does."""
    model = build_model(encoder=TINY, lora_rank=4)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    ids, mask, sensors, labels = make_dataset(small_records[:8], tokenizer).tensors
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(ids, mask, sensors, labels), batch_size=8)
    clip = 1e-3
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    hooks, dp_opt, _ = SecurePrivacyEngine().make_private(
        module=model, optimizer=opt, data_loader=loader, noise_multiplier=0.0, max_grad_norm=clip,
        wrap_model=False, poisson_sampling=True)
    assert isinstance(dp_opt, CsprngDPOptimizer)
    torch.nn.functional.cross_entropy(model(ids, mask, sensors), labels).backward()
    params = [p for p in model.parameters() if p.requires_grad]
    norms = torch.stack([p.grad_sample.reshape(8, -1).norm(dim=1) for p in params]).norm(dim=0)
    assert bool((norms > clip).all())  # every example needs clipping
    dp_opt.clip_and_accumulate()
    factors = (clip / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        expected = torch.einsum("i,i...->i...", factors, p.grad_sample).sum(dim=0)
        torch.testing.assert_close(p.summed_grad, expected, rtol=1e-5, atol=1e-9)
    total = torch.stack([p.summed_grad.norm() for p in params]).norm()
    assert float(total) <= 8 * clip * (1 + 1e-4)  # the sum of 8 clipped examples
    hooks.cleanup()


def test_adapters_step_at_the_scaled_rate() -> None:
    from secagg_clients.trainer import _param_groups

    model = build_model(encoder=TINY, lora_rank=2)
    groups = _param_groups(model, 3e-2, 0.1)
    assert [g["lr"] for g in groups] == [pytest.approx(3e-2), pytest.approx(3e-3)]
    names = {id(p): n for n, p in model.named_parameters()}
    head, adapters = ([names[id(p)] for p in g["params"]] for g in groups)  # type: ignore[attr-defined]
    assert head and all(n.startswith(("head.", "sensor_proj.")) for n in head)
    assert adapters and all("lora_" in n for n in adapters)
    assert len(head) + len(adapters) == sum(p.requires_grad for p in model.parameters())
    with pytest.raises(InvalidParameter, match="adapter_lr_scale"):
        _config(adapter_lr_scale=0.0)


def test_secure_optimizer_noise_has_the_promised_std() -> None:
    p = torch.nn.Parameter(torch.zeros(200_000))
    opt = CsprngDPOptimizer(torch.optim.SGD([p], lr=1.0), noise_multiplier=1.5,
                            max_grad_norm=0.2, expected_batch_size=1)
    p.summed_grad = torch.zeros_like(p)
    opt.add_noise()
    first = p.grad.clone()
    std = float(first.double().std())
    # sample std of 2e5 normals: relative s.e. 1/sqrt(4e5) = 0.16 %; 1 % is > 6 s.e.
    assert std == pytest.approx(0.3, rel=0.01)
    p.summed_grad = torch.zeros_like(p)
    opt.add_noise()
    assert not torch.equal(first, p.grad)  # fresh keystream every step


def test_secure_engine_refuses_a_seeded_generator(small_records: list[Record],
                                                  tokenizer: object) -> None:
    model = build_model(encoder=TINY, lora_rank=2)
    loader = torch.utils.data.DataLoader(make_dataset(small_records, tokenizer), batch_size=16)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with pytest.raises(ValueError, match="seeded"):
        SecurePrivacyEngine().make_private(
            module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0,
            max_grad_norm=1.0, noise_generator=torch.Generator(), wrap_model=False)
    with pytest.raises(InvalidParameter, match="seed"):
        DPConfig(noise_multiplier=1.0, seed=1)


def test_insecure_mode_is_reproducible_and_reports_the_mechanism(
    tokenizer: object, small_records: list[Record]
) -> None:
    data = make_dataset(small_records, tokenizer)
    runs = []
    for _ in range(2):
        model = build_model(encoder=TINY, lora_rank=4, seed=5)
        report = train_private(model, data, _config(target_epsilon=4.0, noise_multiplier=None),
                               progress=False)
        runs.append((report, [p.detach().clone() for p in model.parameters() if p.requires_grad]))
    (r1, w1), (r2, w2) = runs
    assert r1 == r2
    assert all(torch.equal(a, b) for a, b in zip(w1, w2, strict=True))
    assert r1.sample_rate == pytest.approx(1 / 6) and r1.steps == 6
    assert r1.epsilon_rdp == pytest.approx(4.0, abs=0.02)
    assert r1.epsilon_prv < r1.epsilon_rdp
    assert 0.0 <= evaluate(build_model(encoder=TINY, lora_rank=4), data) <= 1.0


@pytest.mark.parametrize(
    ("kw", "field"),
    [(dict(noise_multiplier=None), "exactly one"), (dict(target_epsilon=1.0), "exactly one"),
     (dict(epochs=0), "epochs"), (dict(learning_rate=-1.0), "learning_rate")],
)
def test_bad_config_names_the_field(kw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidParameter, match=field):
        _config(**kw)


def test_models_built_with_one_seed_are_identical() -> None:
    a = build_model(encoder=TINY, lora_rank=4, seed=9)
    b = build_model(encoder=TINY, lora_rank=4, seed=9)
    for (n1, p1), (n2, p2) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    assert np.isfinite(sum(float(p.sum()) for p in a.parameters()))


def test_an_empty_poisson_batch_is_a_step_of_noise_alone(
    tokenizer: object, small_records: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four records at q = 1/4: Poisson sampling draws empty batches. Each is a DP-SGD step all
    the same (noise, no gradient; the accountant counts it), not a crash. Positive control: the
    step without the empty-batch path stops on the model's forward pass."""
    import secagg_clients.trainer as trainer

    data = make_dataset(small_records[:4], tokenizer)
    empty: list[int] = []
    real_empty_step = trainer._empty_step

    def counting(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        empty.append(1)
        real_empty_step(model, optimizer)

    monkeypatch.setattr(trainer, "_empty_step", counting)
    model = build_model(encoder=TINY, lora_rank=2)
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    report = train_private(model, data, _config(epochs=3, batch_size=1, seed=2), progress=False)
    assert empty, "seed 2 draws at least one empty batch at this size"
    assert report.steps == 12 and report.sample_rate == pytest.approx(0.25)
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert all(not torch.equal(a, b) for a, b in zip(before, after, strict=True))

    def old_step(model: torch.nn.Module, batch: list[torch.Tensor],
                 optimizer: torch.optim.Optimizer, loss_fn: torch.nn.Module) -> float:
        ids, mask, sensors, labels = batch
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(ids, mask, sensors), labels)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    monkeypatch.setattr(trainer, "_step", old_step)
    with pytest.raises(RuntimeError):
        train_private(build_model(encoder=TINY, lora_rank=2), data,
                      _config(epochs=3, batch_size=1, seed=2), progress=False)


def test_secure_mode_takes_empty_batches_too(
    tokenizer: object, small_records: list[Record], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CSPRNG optimiser (not seedable) over 40 steps at q = 1/4 on four records: each step
    is empty with probability 0.75^4, so the run draws empty batches but for a chance of
    (1 - 0.75^4)^40 < 3e-7, and completes."""
    import secagg_clients.trainer as trainer

    empty: list[int] = []
    real_empty_step = trainer._empty_step

    def counting(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        empty.append(1)
        real_empty_step(model, optimizer)

    monkeypatch.setattr(trainer, "_empty_step", counting)
    report = train_private(build_model(encoder=TINY, lora_rank=2),
                           make_dataset(small_records[:4], tokenizer),
                           _config(epochs=10, batch_size=1, noise_mode=NoiseMode.SECURE,
                                   seed=None), progress=False)
    assert report.steps == 40 and empty
