"""One module per view of the app, each runnable alone (`python -m app.views.training`, `.sessions`, `.wizard`,
`app.views.explorer.<panel>`). Views render state and send commands; they hold no state of their own that
another part of the app reads (that lives in app/core/)."""
