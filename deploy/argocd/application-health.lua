-- Argo CD health check for argoproj.io/Application, for app-of-apps. Argo CD 1.8 removed the
-- built-in one, so without this a parent Application sees every child as Healthy at once and its
-- sync waves do not wait: the ingestions would be applied before the operator's CRD exists.
-- The child's own health (status.health) becomes the health of the child as a resource.
local hs = {}
hs.status = "Progressing"
hs.message = ""
if obj.status ~= nil and obj.status.health ~= nil and obj.status.health.status ~= nil and obj.status.health.status ~= "" then
  hs.status = obj.status.health.status
  if obj.status.health.message ~= nil then
    hs.message = obj.status.health.message
  end
end
return hs
