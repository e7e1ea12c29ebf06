"""Training, evaluation and ImageNet pretraining; one sub-module per CLI command.

    from lemore.engine.train import train            # train(cfg) -> run_dir
    from lemore.engine.evaluate import evaluate      # evaluate(model, loader, cfg) -> metrics
    from lemore.engine.pretrain import pretrain      # pretrain(PretrainCfg) -> run_dir (encoder.safetensors)

The functions are deliberately not re-exported here: ``lemore.engine.train`` must stay the module (its name
would otherwise be shadowed by the function, breaking ``import lemore.engine.train as T`` and monkeypatching).
"""
