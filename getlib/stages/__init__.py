"""The pipeline's stages, one module each: what each notebook in notebooks/ calls.

    data -> features -> teacher@{cond} -> pairs@{cond} -> distill@{student} -> evaluate -> figures

A stage function reads the validated `config.Params`, writes its heavy outputs under work/<profile>/
(cached by DVC, git-ignored) and its small, reviewable ones under results/<profile>/ (committed),
and returns a summary for the notebook to show. Every file is written atomically; the pair and
distillation stages resume an interrupted run.

A stage module imports only what its stage runs: dvc.yaml lists, per stage, the getlib modules its
notebook can execute (their import closure), and tests/test_artifacts.py checks those lists against
the code, so an edit re-runs exactly the stages that can see it.
"""
