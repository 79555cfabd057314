-- wrk script for bench.ingest (a): each request POSTs one new parcel.received event, the same
-- event bench.load sends for a batch of one, with an event id and waybill no request repeats.
-- Each event id starts with 32 random bits, as bench.load's do: a station's own random UUIDs
-- land all over the log's primary key; the rest (nonce, thread, counter) keeps them unique.
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
  math.randomseed(os.time() * 1000 + tid)
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"type":"parcel.received","event_id":"%04x%04x-%s-4%s-8%03x-%s%011x","site_id":"%s",' ..
    '"waybill_no":"BW%s%02d%010d","occurred_at":"%s","carrier":"SF","flow":"inter_province"}',
    math.random(0, 65535), math.random(0, 65535), nonce:sub(1, 4), nonce:sub(5, 7), tid,
    nonce:sub(8, 8), counter, site, nonce, tid, counter, occurred)
  return wrk.format("POST", nil, {["Authorization"] = "Bearer " .. key,
                                  ["Content-Type"] = "application/json"}, body)
end
