// Package harvester holds what netconf-migrator knows of Harvester, in one
// place, each fact read from Harvester's source at the releases named
// beside it (harvester/harvester and
// harvester/network-controller-harvester):
//
//   - the NADs its settings manage (settings.go), which this tool never
//     deletes;
//   - the finalizers its network controllers put on every NAD, the label
//     they recompute, and its network webhooks, whose refusal of an
//     in-place write calls for a replacement (controllers.go);
//   - the rules and the exact words of its network validator, which the
//     harvester validation profile applies (validator.go);
//   - the advice a person gets when Harvester refuses a write, matched on
//     its words, which differ by release (advice.go).
//
// The upgrade pre-hook that Harvester's upgrade runs is a script shipped in
// config/harvester-upgrade; it calls the migrate command and needs nothing
// of this package. The stand-ins of Harvester's webhooks and controllers
// the suites run beside are in test/harvester, not here: nothing shipped
// imports them.
package harvester
