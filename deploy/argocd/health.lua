-- Argo CD health check for ingestion.vectordb.io/CsvIngestion.
-- Argo CD runs custom checks without Lua's string library: only base and table functions here.
--   Healthy      phase Completed, or PartiallyCompleted (finished within spec.chunking.maxFailedRowsPercent:
--                the message says so and how many rows failed; status.failedChunks has the details)
--   Degraded     phase Failed
--   Suspended    spec.suspend is in effect (condition Suspended), or phase Cancelled (no more work)
--   Progressing  otherwise, and whenever the status is older than the spec (observedGeneration)
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
if status == nil or not nonEmpty(status.phase) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile"
  return hs
end

-- A status written for an older spec says nothing about the current one.
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase
local message = status.message

if phase == "Completed" then
  hs.status = "Healthy"
  hs.message = nonEmpty(message) and message or "Completed"
  return hs
end

-- A finished run within its failure budget is what was asked for; Degraded would stay forever
-- (the resource never changes again) and hide a later, real failure of the Application.
if phase == "PartiallyCompleted" then
  hs.status = "Healthy"
  hs.message = nonEmpty(message) and (phase .. ": " .. message) or phase
  return hs
end

if phase == "Failed" then
  hs.status = "Degraded"
  hs.message = nonEmpty(message) and (phase .. ": " .. message) or phase
  return hs
end

if phase == "Cancelled" then
  hs.status = "Suspended"
  hs.message = nonEmpty(message) and ("Cancelled: " .. message) or "Cancelled"
  return hs
end

local suspended = condition(status, "Suspended")
if suspended ~= nil and suspended.status == "True" then
  hs.status = "Suspended"
  hs.message = nonEmpty(suspended.message) and suspended.message or "Suspended"
  return hs
end

hs.status = "Progressing"
hs.message = phase
if nonEmpty(status.progress) then
  hs.message = hs.message .. " " .. status.progress .. " chunks"
end
if nonEmpty(message) then
  hs.message = hs.message .. ": " .. message
end
return hs
