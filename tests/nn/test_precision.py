"""Mixed precision (``TrainConfig.precision``) as far as a CPU can test it: bf16 autocast
trains, fp16 is refused with the fix, and the critic's gradient penalty stays float32."""
from __future__ import annotations

import pytest
import torch
from test_critic_columns import _graph

from mmssl_pyg.models.mmssl import MMSSL
from mmssl_pyg.nn.critic import RelationCritic
from mmssl_pyg.nn.losses import gradient_penalty, projected_gradient_penalty
from mmssl_pyg.training import TrainConfig, Trainer
from mmssl_pyg.training.options import ConfigError


def _critic():
    torch.manual_seed(0)
    return RelationCritic(32, dropout=(0.0, 0.0)).eval()


def test_projected_gradient_penalty_is_float32_under_bf16_autocast():
    critic = _critic()
    # the first layer's outputs, as the critic step computes them (they carry W1's graph)
    z_real = torch.randn(6, 8).bfloat16().requires_grad_()
    z_fake = torch.randn(6, 8).bfloat16().requires_grad_()
    alpha = torch.rand(6, 1)
    seen = []
    hook = critic.lin2.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert torch.is_autocast_enabled('cpu')
        with_amp = projected_gradient_penalty(critic, z_real, z_fake, alpha)
        assert torch.is_autocast_enabled('cpu')  # restored after the penalty
    hook.remove()
    assert with_amp.dtype == torch.float32
    assert seen == [(torch.float32, torch.float32)]  # the critic head ran in float32
    reference = projected_gradient_penalty(critic, z_real.float(), z_fake.float(), alpha)
    assert torch.equal(with_amp, reference)
    # whereas under autocast an ordinary linear layer runs in bfloat16
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = critic.lin2(torch.randn(2, 8))
    assert out.dtype == torch.bfloat16


def test_dense_gradient_penalty_is_float32_under_bf16_autocast():
    critic = _critic()
    real, fake = torch.rand(4, 32).bfloat16(), torch.rand(4, 32).bfloat16()
    alpha = torch.rand(4, 1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        gp = gradient_penalty(critic, real, fake, alpha)
    assert gp.dtype == torch.float32
    assert torch.equal(gp, gradient_penalty(critic, real.float(), fake.float(), alpha))


def test_mmssl_trains_with_bf16_autocast_on_cpu():
    graph = _graph()
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.1)
    cfg = TrainConfig(batch_size=8, batches_per_epoch=2, epochs=1, precision='bf16',
                      device='cpu', progress=False, ks=(10, 20))
    trainer = Trainer(model, graph, cfg)
    assert trainer.amp_dtype == torch.bfloat16 and trainer.scaler is None
    # output dtypes of linear layers, by whether the model was training (autocast) or not
    seen = {}
    layers = {'feature projection': model.generator.lins[0], 'attention': model.attention.out,
              'critic': model.critic.lin2}
    hooks = [layer.register_forward_hook(
        lambda mod, inp, out, name=name: seen.setdefault((name, model.training), set()).add(
            out.dtype)) for name, layer in layers.items()]
    try:
        result = trainer.fit()
    finally:
        for hook in hooks:
            hook.remove()
    # the training steps ran under bf16 autocast: the linear layers produced bfloat16 ...
    assert seen[('feature projection', True)] == {torch.bfloat16}
    assert seen[('attention', True)] == {torch.bfloat16}
    # ... except inside the gradient penalty, which runs the critic head in float32
    assert seen[('critic', True)] == {torch.bfloat16, torch.float32}
    # evaluation (eval mode) stays float32
    assert seen[('feature projection', False)] == {torch.float32}
    assert seen[('attention', False)] == {torch.float32}
    h = result.history[0]
    assert all(torch.isfinite(torch.tensor(v)) for k, v in h.items() if k.startswith('train/'))
    assert h['train/critic_gradient_penalty'] > 0
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32


def test_fp16_on_cpu_is_refused_with_the_fix():
    graph = _graph()
    torch.manual_seed(0)
    model = MMSSL(graph, embedding_dim=8, num_heads=2, topk_rate=0.1)
    with pytest.raises(ConfigError, match='fp16 needs a CUDA GPU.*bf16'):
        Trainer(model, graph, TrainConfig(precision='fp16', device='cpu', progress=False))
    with pytest.raises(ConfigError, match='precision'):
        TrainConfig(precision='fp8')
    assert TrainConfig().precision == 'fp32'


def test_cli_refuses_fp16_on_cpu_before_loading_data(tmp_path, capsys):
    from mmssl_pyg import cli
    argv = ['train', '--model', 'lightgcn', '--dataset', str(tmp_path / 'absent'), '--device',
            'cpu', '--precision', 'fp16', '--wandb', 'disabled', '--run-dir',
            str(tmp_path / 'run')]
    assert cli.main(argv) == 2
    assert 'fp16 needs a CUDA GPU' in capsys.readouterr().err
    assert not (tmp_path / 'run').exists()
