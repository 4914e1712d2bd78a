"""Summaries of live sessions and field recordings, made by the LLM Gateway.

``stored`` keeps and reads them (the one place their files are named),
``jobs`` is their durable queue in the spool database, ``worker`` asks the
gateway for each and retries, ``text`` turns a transcript into the request.
"""
