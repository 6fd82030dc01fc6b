"""buttress in the frameworks and clients services already use: one module each, each an
optional extra, imported only by name (``import buttress.integrations.asgi``), so
``import buttress`` never imports a framework. See docs/integrations/.

What every web integration shares (how a refusal is answered over HTTP, which client an
address behind proxies stands for) is framework-free, in ``_http.py``.
"""
