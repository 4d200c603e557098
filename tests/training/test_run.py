"""mmssl_pyg.training.run: one run assembly (RunRequest -> prepare_run -> Run), the request in
config.yaml, and resume as a merge (also of run folders written before requests were stored)."""
from __future__ import annotations

import pytest
import torch
import yaml

from mmssl_pyg.training.options import ConfigError
from mmssl_pyg.training.run import RunRequest, load_run_checkpoint, prepare_run, train_run

#: A one-epoch MF run on the bundled tiktok-mini data (about a second).
TINY = dict(model='mf', dataset='tiktok-mini', device='cpu', wandb='disabled', progress=False,
            overrides=['num_threads=1', 'embedding_dim=8', 'batch_size=64',
                       'batches_per_epoch=2', 'patience=0'])


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_prepare_run_seeds_before_building_so_a_request_builds_the_same_model():
    request = RunRequest(**{**TINY, 'seed': 3})
    a = prepare_run(request)
    torch.randn(100)  # the global stream moves on: prepare_run must seed again
    b = prepare_run(request, data=(a.graph, a.identity))
    c = prepare_run(RunRequest(**{**TINY, 'seed': 4}), data=(a.graph, a.identity))
    wa, wb, wc = _weights(a.model), _weights(b.model), _weights(c.model)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)
    assert a.options.train.seed == 3 and a.model_kwargs['embedding_dim'] == 8
    assert a.identity['digest'] and a.identity['root'].endswith('tiktok-mini')


def test_prepare_run_checks_options_before_loading_the_data(monkeypatch):
    import mmssl_pyg.training.run as run_module

    def no_loading(*args, **kwargs):
        raise AssertionError('the data was loaded before the options were checked')

    monkeypatch.setattr(run_module, 'load_data', no_loading)
    with pytest.raises(ConfigError, match='embedding_dim'):
        prepare_run(RunRequest(**{**TINY, 'overrides': ['embedding_dim=0']}))


def test_config_yaml_stores_the_request_and_resume_merges_it(tmp_path):
    run_dir = tmp_path / 'run'
    first = train_run(RunRequest(**TINY, epochs=1, seed=5, run_dir=run_dir))
    saved = yaml.safe_load((run_dir / 'config.yaml').read_text())
    request = saved['request']
    assert request['model'] == 'mf' and request['epochs'] == 1 and request['seed'] == 5
    assert request['overrides'] == TINY['overrides'] and request['wandb'] == 'disabled'
    assert request['dataset'] == 'tiktok-mini' and saved['train']['epochs'] == 1
    assert first.fit.resumed_from_epoch is None

    again = train_run(run_dir=run_dir, resume=True, epochs=2, overrides=['patience=3'],
                      progress=False)
    assert again.fit.resumed_from_epoch == 1 and len(again.fit.history) == 2
    merged = yaml.safe_load((run_dir / 'config.yaml').read_text())['request']
    assert merged['epochs'] == 2 and merged['seed'] == 5  # given now wins, the rest is kept
    assert merged['overrides'] == [*TINY['overrides'], 'patience=3']
    assert RunRequest.from_record({'request': merged}).overrides == merged['overrides']


def test_resume_of_a_run_folder_without_a_stored_request(tmp_path):
    """config.yaml written before requests were stored (model, dataset, root, modalities,
    wandb_mode at the top, options only resolved) still resumes, and gains a request."""
    run_dir = tmp_path / 'old'
    train_run(RunRequest(**TINY, epochs=1, run_dir=run_dir))
    path = run_dir / 'config.yaml'
    saved = yaml.safe_load(path.read_text())
    del saved['request']
    path.write_text(yaml.safe_dump(saved, sort_keys=False))
    assert RunRequest.from_record(saved).wandb == 'disabled'

    result = train_run(run_dir=run_dir, resume=True, epochs=2, progress=False)
    assert result.fit.resumed_from_epoch == 1 and len(result.fit.history) == 2
    request = yaml.safe_load(path.read_text())['request']
    assert request['model'] == 'mf' and request['epochs'] == 2 and request['overrides'] == []
    model, graph, state = load_run_checkpoint(run_dir, device='cpu')
    assert state['epoch'] in (1, 2) and model.num_items == graph.num_items


def test_resume_refuses_another_model(tmp_path):
    run_dir = tmp_path / 'run'
    train_run(RunRequest(**TINY, epochs=1, run_dir=run_dir))
    with pytest.raises(ConfigError, match='started with mf'):
        train_run(run_dir=run_dir, resume=True, model='lightgcn')


def test_merged_over_keeps_the_saved_fields_and_appends_overrides():
    saved = {'request': {'model': 'mf', 'dataset': 'tiktok-mini', 'epochs': 3, 'seed': 1,
                         'overrides': ['lr=0.01'], 'tuned': True, 'config_file': 'a.yaml'}}
    merged = RunRequest(epochs=9, overrides=[('patience', 2)]).merged_over(saved)
    assert (merged.model, merged.epochs, merged.seed, merged.tuned) == ('mf', 9, 1, True)
    assert merged.config_file == 'a.yaml'
    assert merged.to_record()['overrides'] == ['lr=0.01', 'patience=2']
