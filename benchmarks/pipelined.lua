-- wrk script: HTTP/1.1 pipelining, DEPTH V2 inference requests written at once on each connection.
-- Usage: wrk -t1 -c4 -d5s -s benchmarks/pipelined.lua http://127.0.0.1:8080/v2/models/iris-mlp/infer -- 16
-- (the body is the demo's iris-mlp request; pass another with BODY=... in the environment)
wrk.method = "POST"
wrk.body = os.getenv("BODY") or '{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}'
wrk.headers["Content-Type"] = "application/json"

init = function(args)
  local depth = tonumber(args[1]) or 16
  local requests = {}
  for i = 1, depth do requests[i] = wrk.format() end
  batch = table.concat(requests)
end

request = function() return batch end
