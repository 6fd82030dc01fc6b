# DO NOT EDIT: generated from test_pool_async.py by tools/async_to_sync.py; edit that file and rerun.
