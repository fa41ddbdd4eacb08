"""The composition root: the ``musicrec`` command, which wires the parts together.

One module per group of verbs: ``data_commands`` (generate), ``training_commands`` (train,
evaluate, recommend), ``export_commands`` (export), ``serve_commands`` (triton, demo) and
``deploy_commands`` (deploy, rollback, status); ``main`` builds the parser and turns user
errors into one-line messages.

May import: every other package. Nothing imports it (import-linter checks it in CI).
"""
