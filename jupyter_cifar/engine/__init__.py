"""The engine: everything that trains, tests and explains a classifier, without Jupyter.

Data (``data``, ``images``, ``batches``), networks and their recipes (``nets``, ``precision``, ``muon``,
``lookahead``, ``tta``), training (``training``, ``fastview``, ``history``), using a model (``predict``,
``views``, ``explain``, ``scaling``), and model files (``modelfiles``, ``modelcontainers``,
``layersizes``, ``modelsizes``, ``export``). The store, jobs, server, widgets and command line build on
it; nothing here imports them. Importing this package imports nothing else: TensorFlow and Keras load
with the modules that need them.
"""
