"""The Explorer tab: see *why* a trained model survives a missing modality.

ExplorerPanel (explorer_panel.py) shows one sample (sample_panel), its modality toggles (toggles, Alt+1…M) and
"apply a mechanism" (mechanism_control), predictions (predictions_panel), ‖Z‖/‖U‖ (latents_panel), soft-PU
(softpu_panel) and the sample's φ (attribution_panel). `service.ExplorerService` runs its requests off the GUI
thread over the Qt-free context and inspection cache of app/core/analysis/context.py; its state is Qt-free too
(app/core/explorer_state.py). MainWindow builds the panel and wires it to the analysis tabs (app/views/analysis).
Each panel runs alone (`python -m app.views.explorer.predictions_panel`) on the synthetic data of
app/views/common/demo.py. The engine side is `robult_engine.inspect`.
"""
