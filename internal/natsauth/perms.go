package natsauth

import (
	"github.com/megawatch/megawatch/internal/natsx"
	"github.com/megawatch/megawatch/internal/telemetry"
)

// The roles: one scoped signing key each. A role's permissions live in the
// account JWT (the key's template), never in the user JWTs, so the
// account JWT is the whole policy and changing it needs no new creds.
const (
	RoleNode   = "node"
	RoleIngest = "ingest"
	RoleAlerts = "alerts"
	RoleTap    = "tap"
	// RoleMeters is `megawatch meters`: it publishes meter reports.
	RoleMeters = "meters"
	// RoleLoadgen may publish every node's subject: for load tests on a
	// test deployment only (Options.Loadgen). A run without it drops the
	// role's key from the account, which revokes the loadgen creds.
	RoleLoadgen = "loadgen"
)

// Service user names (the JWT name, and so the inbox prefix _INBOX.<name>).
// No topology node may carry one of these names.
var serviceUsers = []string{RoleIngest, RoleAlerts, RoleTap, RoleMeters, RoleLoadgen}

// NodeSubjectTemplate is the one subject a node may publish to: its own
// power subject, expanded by nats-server from the user's name and tags.
const NodeSubjectTemplate = telemetry.PowerPrefix + ".{{tag(site)}}.{{tag(hall)}}.{{tag(row)}}.{{tag(rack)}}.{{name()}}"

// ownInbox is the subscribe permission for a user's own reply inboxes
// (natsx derives the prefix _INBOX.<name> from the creds). Nobody may
// subscribe to _INBOX.>: the replies to other users' requests (JetStream
// acks, fetched messages, KV values) would reach it.
var ownInbox = natsx.UserInboxWildcard("{{name()}}")

// Permissions of one role: subjects allowed to publish and subscribe to,
// and subjects denied for publishing. An empty allow list with nothing
// denied would allow everything, so every role lists what it needs.
//
// No role gets allow_responses: no megawatch component answers requests;
// every reply it needs comes from the server (JetStream, KV) to its own
// inbox.
type Permissions struct {
	Pub, Sub, PubDeny []string
	MaxPayload        int64 // bytes per message; 0: the server's max_payload
}

// Options of the policy that depend on the deployment.
type PolicyOptions struct {
	KVBucket string // alert state bucket (alerts.kv_bucket), default MEGAWATCH_ALERTS
}

func jsStreamAdmin(stream string) []string {
	return []string{
		"$JS.API.STREAM.INFO." + stream,
		"$JS.API.STREAM.CREATE." + stream,
		"$JS.API.STREAM.UPDATE." + stream,
	}
}

// jsPullConsumer is what a durable pull consumer on stream needs: create
// or update it, read its info, fetch, and ack what it fetched.
func jsPullConsumer(stream string) []string {
	return []string{
		"$JS.API.CONSUMER.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.INFO." + stream + ".>",
		"$JS.API.CONSUMER.MSG.NEXT." + stream + ".>",
		"$JS.ACK." + stream + ".>",
	}
}

// NodePermissions: a collector publishes its own reports (JetStream
// publish: the ack comes to its own inbox) and nothing else. It has no
// JetStream API access at all, so it can neither read nor manage streams.
func NodePermissions() Permissions {
	return Permissions{Pub: []string{NodeSubjectTemplate}, Sub: []string{ownInbox}, MaxPayload: NodeMaxPayload}
}

// NodeMaxPayload caps a node's message: a report of an 8-GPU node is
// about 1 KiB, of a 72-GPU rack-scale node under 16 KiB.
const NodeMaxPayload = 64 << 10

// IngestPermissions: set up the power, rollup, dead-letter and meter
// streams, consume power, rollups and meter reports with durable pull
// consumers, publish dead letters. No stream delete or purge, no other
// stream's consumers.
func IngestPermissions() Permissions {
	var pub []string
	for _, s := range []string{telemetry.StreamPower, telemetry.StreamRollup, telemetry.StreamDeadLetter, telemetry.StreamMeter} {
		pub = append(pub, jsStreamAdmin(s)...)
	}
	pub = append(pub, jsPullConsumer(telemetry.StreamPower)...)
	pub = append(pub, jsPullConsumer(telemetry.StreamRollup)...)
	pub = append(pub, jsPullConsumer(telemetry.StreamMeter)...)
	pub = append(pub, telemetry.DeadLetterWildcard)
	// The alert event that says a field is being lost to a type conflict
	// (ingest.ConflictAlertSubject; a test holds the two equal).
	pub = append(pub, telemetry.AlertPrefix+".warning.ingest_field_conflict")
	return Permissions{Pub: pub, Sub: []string{ownInbox}}
}

// jsOrderedConsumer is what an ordered (ephemeral, unacked) pull consumer
// on stream needs: create it (and re-create it after a gap), read its
// info, fetch. The aggregator reads its input this way. No delete: its
// subject would match every consumer of the stream (ingest's durable one
// too); nats.go's best-effort delete of a replaced ordered consumer is
// refused and the consumer goes by its inactive threshold (1 minute).
func jsOrderedConsumer(stream string) []string {
	return []string{
		"$JS.API.CONSUMER.CREATE." + stream,
		"$JS.API.CONSUMER.CREATE." + stream + ".>",
		"$JS.API.CONSUMER.INFO." + stream + ".>",
		"$JS.API.CONSUMER.MSG.NEXT." + stream + ".>",
	}
}

// AlertsPermissions: read node reports (MEGAWATCH_POWER), hall rollups
// (MEGAWATCH_ROLLUP, for a site aggregator) and meter reports
// (MEGAWATCH_METER) from their streams with ordered consumers, set up
// those streams, publish rollups and alert
// events, and keep alert state in the KV bucket (create it, get, put,
// delete, list keys). No core-NATS subscription to any megawatch subject.
func AlertsPermissions(o PolicyOptions) Permissions {
	kv := "KV_" + o.bucket()
	pub := jsStreamAdmin(telemetry.StreamPower)
	pub = append(pub, jsStreamAdmin(telemetry.StreamRollup)...)
	pub = append(pub, jsOrderedConsumer(telemetry.StreamPower)...)
	pub = append(pub, jsOrderedConsumer(telemetry.StreamRollup)...)
	// Meter reports (MEGAWATCH_METER): set up like the power stream, read
	// with a second ordered consumer.
	pub = append(pub, jsStreamAdmin(telemetry.StreamMeter)...)
	pub = append(pub, jsOrderedConsumer(telemetry.StreamMeter)...)
	pub = append(pub, jsStreamAdmin(kv)...)
	pub = append(pub,
		"$JS.API.INFO", // nats.go reads the account's JetStream info before creating a bucket
		"$KV."+o.bucket()+".>",
		"$JS.API.STREAM.MSG.GET."+kv,
		"$JS.API.DIRECT.GET."+kv,
		"$JS.API.DIRECT.GET."+kv+".>",
		// ListKeys and watches: ordered consumers with flow control.
		"$JS.API.CONSUMER.CREATE."+kv,
		"$JS.API.CONSUMER.CREATE."+kv+".>",
		"$JS.API.CONSUMER.DELETE."+kv+".>",
		"$JS.API.CONSUMER.INFO."+kv+".>",
		"$JS.API.CONSUMER.MSG.NEXT."+kv+".>",
		"$JS.FC."+kv+".>",
		telemetry.RollupWildcard,
		telemetry.AlertWildcard,
	)
	return Permissions{Pub: pub, Sub: []string{ownInbox}}
}

// MetersPermissions: `megawatch meters` sets up the meter stream and
// publishes meter reports (JetStream publish, acks to its own inbox).
func MetersPermissions() Permissions {
	pub := jsStreamAdmin(telemetry.StreamMeter)
	pub = append(pub, telemetry.MeterWildcard)
	return Permissions{Pub: pub, Sub: []string{ownInbox}}
}

// TapPermissions: read every megawatch subject live, publish nothing.
func TapPermissions() Permissions {
	return Permissions{Sub: []string{telemetry.Prefix + ".>", ownInbox}, PubDeny: []string{">"}}
}

// LoadgenPermissions: publish any node's reports (JetStream publish, acks
// to its own inbox). It cannot set up streams: ingest does.
func LoadgenPermissions() Permissions {
	return Permissions{Pub: []string{telemetry.PowerWildcard}, Sub: []string{ownInbox}}
}

func (o PolicyOptions) bucket() string {
	if o.KVBucket == "" {
		return "MEGAWATCH_ALERTS"
	}
	return o.KVBucket
}

// Policy is every role's permissions.
func Policy(o PolicyOptions) map[string]Permissions {
	return map[string]Permissions{
		RoleNode:    NodePermissions(),
		RoleIngest:  IngestPermissions(),
		RoleAlerts:  AlertsPermissions(o),
		RoleTap:     TapPermissions(),
		RoleMeters:  MetersPermissions(),
		RoleLoadgen: LoadgenPermissions(),
	}
}
