# mmdet's default runtime, iteration-based (checkpoints every 10k iterations, logs every 20), plus the
# plugin import and exact-resume RNG checkpointing. OHEM's per-iteration mining stats (ohem_*) appear in the log lines and json log.
_base_ = 'mmdet::_base_/default_runtime.py'
custom_imports = dict(imports=['mmdet_ohem', 'mmdet_ohem.reliability'], allow_failed_imports=False)
default_scope = 'mmdet'
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=10000, max_keep_ckpts=3))
log_processor = dict(type='LogProcessor', window_size=20, by_epoch=False)
# Stores every rank's RNG state in checkpoints so that a killed and --resume'd run continues exactly as an
# uninterrupted one would (mmengine alone restores weights and optimiser, not the random streams).
custom_hooks = [dict(type='RNGStateHook')]
