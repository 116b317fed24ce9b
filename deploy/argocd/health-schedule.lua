-- Argo CD health check for ingestion.vectordb.io/CsvIngestionSchedule.
-- Argo CD runs custom checks without Lua's string library: only base and table functions here.
--   Degraded     condition Ready is False: an invalid schedule, time zone or template (no runs
--                until the spec is fixed), or reason RunRejected: the latest run was refused by
--                the API server (admission policy, quota) or failed to be created; it stays so,
--                while the operator retries, until a run is created
--   Suspended    spec.suspend: no new runs
--   Healthy      otherwise; the message names the last run, the active runs and a skipped run
--   Progressing  until the operator has observed the current spec (observedGeneration)
-- The runs themselves are CsvIngestions with their own health.
local hs = {}

local function condition(status, conditionType)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == conditionType then
      return c
    end
  end
  return nil
end

local function nonEmpty(s)
  return s ~= nil and s ~= ""
end

local status = obj.status
local generation = obj.metadata.generation
if status == nil or status.observedGeneration == nil or (generation ~= nil and status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = condition(status, "Ready")
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = nonEmpty(ready.message) and ready.message or "schedule not ready"
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended: no new runs"
  return hs
end

hs.status = "Healthy"
local parts = {}
if nonEmpty(status.lastScheduleTime) then
  table.insert(parts, "last run " .. status.lastScheduleTime)
else
  table.insert(parts, "no run yet")
end
table.insert(parts, tostring(status.activeCount or 0) .. " active")
local skipped = condition(status, "RunSkipped")
if skipped ~= nil and skipped.status == "True" and nonEmpty(skipped.message) then
  table.insert(parts, skipped.message)
end
hs.message = table.concat(parts, "; ")
return hs
