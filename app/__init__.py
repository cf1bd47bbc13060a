"""The Portico desktop console. Only app.views and app.models import Qt."""
