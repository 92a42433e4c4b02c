-- Same request body the harness uses for cold start and warm-up, so every
-- number in the report comes from one identical request.
wrk.method = "POST"
wrk.body = '{"parameters": {"name": "World"}}'
wrk.headers["Content-Type"] = "application/json"
