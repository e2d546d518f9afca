--[[
moonwire.provision: provisioning as small steps a flow strings together.

A flow runs in a coroutine (prov.run); a step that talks to the network suspends the flow
until its answer arrives or its timeout passes, so a flow reads as plain sequential code.
Every step returns its result, or nil, message, code (code is AWS IoT's errorCode for a
rejected request, else an E-name such as "ETIMEDOUT"). Inside a flow the same steps are
reached through the flow context f, where a failure stops the flow and is reported as
"step <name> failed: <code>: <message>".

Nothing a device relies on changes before commit: new keys go to a slot or file the current
identity does not use, certificates and the configuration are written under new names, and
commit switches over with one atomic rename, after verify has connected with the new identity.

docs/provisioning.md describes the steps, the shipped flows and the local service.

This file is the public module; the work is done by private parts in
scripts/moonwire/provision/, one job each (docs/ARCHITECTURE.md), which add the public
functions to the module table (made in moonwire.provision.shared, so the parts need no
require cycle to call each other's steps).
]]

local M = require("moonwire.provision.shared").M

require "moonwire.provision.runner"       -- StepError: the coroutine runner under the steps
require "moonwire.provision.values"       -- copy, parse_pairs, dirname, shown, cert_slot_for
require "moonwire.provision.config"       -- read_config, serialize, device_base, keys_in_use
require "moonwire.provision.conn"         -- connect, disconnect
require "moonwire.provision.keys"         -- keygen, save_key, csr
require "moonwire.provision.certificates" -- create_certificate_from_csr, create_keys_and_certificate,
                                          -- register_thing, register_certificate, sign_csr
require "moonwire.provision.identity"     -- store_certificate, write_config, verify, commit
require "moonwire.provision.flows"        -- STEPS, flows, load, run, _main
-- (moonwire.provision.report: the progress and dry-run lines of the flows)

return M
