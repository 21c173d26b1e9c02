-- Argo CD health of a NADMigration (netconf-migrator.harvesterhci.io/v1alpha1).
-- Argo CD reads no kstatus conditions of a kind it does not know: this maps them.
--   Ready=True     Healthy   (every NAD in its scope is flat, or was already)
--   Stalled=True   Degraded  (NADs need a person, a NAD is missing, timed out, invalid spec)
--   otherwise      Progressing (queued, waiting for the run Lease, running, or not seen yet)
local hs = {}
if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the netconf-migrator operator to pick it up"
  return hs
end
if obj.metadata.generation ~= nil and obj.status.observedGeneration ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the netconf-migrator operator to see the latest spec"
  return hs
end
local function describe(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Stalled" and c.status == "True" then
    hs.status = "Degraded"
    hs.message = describe(c)
    return hs
  end
end
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" and c.status == "True" then
    hs.status = "Healthy"
    hs.message = describe(c)
    return hs
  end
end
hs.status = "Progressing"
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Reconciling" and c.status == "True" then
    hs.message = describe(c)
    return hs
  end
end
hs.message = "Running"
return hs
