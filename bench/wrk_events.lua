-- wrk script for bench.ingest (a): each request POSTs one new parcel.received event, the same
-- event bench.load sends for a batch of one, with an event id and waybill no request repeats.
-- Arguments after `--`: API key, site id, run nonce (8 hex digits), occurred_at (ISO 8601).
local counter = 0
local threads = 0
local key, site, nonce, occurred

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  key, site, nonce, occurred = args[1], args[2], args[3], args[4]
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"type":"parcel.received","event_id":"%s-%04x-4000-8000-%012x","site_id":"%s",' ..
    '"waybill_no":"BW%s%02d%010d","occurred_at":"%s","carrier":"SF","flow":"inter_province"}',
    nonce, tid, counter, site, nonce, tid, counter, occurred)
  return wrk.format("POST", nil, {["Authorization"] = "Bearer " .. key,
                                  ["Content-Type"] = "application/json"}, body)
end
