"""The stage contracts: every artifact passed between stages, one module each.

Each module owns its artifact's path (relative to the project root, as in ``dvc.yaml``),
its file names, its metadata and its reader and writer, so that no other code spells a
file name or guesses a fact the artifact already records (image size, z_dim, data version).

=============  ======================  ==================  ==========================
module         path                    written by          read by
=============  ======================  ==================  ==========================
``raw``        ``data/raw/``           download            detect, audit
``faces``      ``data/faces/``         detect              augment, validate, evaluate, stylize_train
``trainset``   ``data/train/``         augment             validate, train
``generator``  ``models/generator.pt`` train               evaluate, generate
``checkpoint`` ``models/checkpoints/`` train               train (resume)
``run``        ``models/run.json``     train               evaluate, flows
``stylizer``   ``models/stylizer.pt``  stylize_train       stylize_eval, stylize, avatar, generate --style
               (+ checkpoints, run)
``reports``    ``metrics/``, ``plots/``, ``reports/``      validate, train, evaluate, stylize_*
=============  ======================  ==================  ==========================
"""
