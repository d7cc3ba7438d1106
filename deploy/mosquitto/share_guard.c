/* share_guard: a mosquitto 2.0 plugin (API v5) that keeps one device certificate from hurting the others.
 *
 * 1. It refuses shared subscriptions ($share/GROUP/...) to every client whose username (its certificate's
 *    common name) is not listed as a member.
 *    Why: mosquitto 2.0's ACL file does not check SUBSCRIBE at all (src/security_default.c answers every
 *    subscribe "allowed"), and its read check runs only when a message is delivered. A device that joins
 *    the pricing service's group $share/pricing/appliance/+/objects is therefore handed its turn of every
 *    device's object messages; the read check then drops them. The senders got their PUBACK and never get
 *    a quote. This plugin runs before the ACL file and answers such a SUBSCRIBE "not authorized" (SUBACK
 *    0x87), so the device never joins the group.
 * 2. It limits how fast each non-member may publish (a token bucket per username: `rate` messages a
 *    second sustained, `burst` at once). Why: every device's messages reach a pricing copy over one
 *    connection, first in first out, so one device flooding its own topic at thousands a second delays
 *    every other device's quote; mosquitto 2.0 has no per-client limit. A message over the limit is
 *    dropped and a QoS 1 sender gets PUBACK 0x87 (see on_message for why not 0x97).
 *
 *   plugin /usr/local/lib/mosquitto/share_guard.so
 *   plugin_opt_member pricing-1          (one line per identity that may join shared groups; no limit)
 *   plugin_opt_rate 1000                 (messages per second per client, sustained; the default)
 *   plugin_opt_burst 5000                (messages a client may send at once; the default)
 *
 * Everything else is deferred to the ACL file. Build: deploy/mosquitto/build-share-guard.sh. */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

/* mosquitto.h (libmosquitto-dev) has the error and log codes; mosquitto-dev alone does not install it.
 * The values are part of the plugin ABI, fixed since 2.0. */
#if __has_include(<mosquitto.h>)
#include <mosquitto.h>
#else
enum { MOSQ_ERR_SUCCESS = 0, MOSQ_ERR_NOMEM = 1, MOSQ_ERR_INVAL = 3, MOSQ_ERR_ACL_DENIED = 12,
	MOSQ_ERR_PLUGIN_DEFER = 17 };
#define MOSQ_LOG_NOTICE (1 << 1)
#define MOSQ_LOG_WARNING (1 << 2)
#define MOSQ_LOG_ERR (1 << 3)
#endif

#define MEMBER_KEY "member"
#define RATE_KEY "rate"
#define BURST_KEY "burst"
#define DEFAULT_RATE 1000.0
#define DEFAULT_BURST 5000.0
/* Idle buckets are swept once the table holds this many, or twice as many as after the last sweep. */
#define MIN_SWEEP 1024

/* One client's token bucket. It outlives the client's connection: a device that reconnects must not get
 * a fresh burst. It is dropped once full, since a full bucket is what a new one would be. */
struct bucket {
	struct bucket *next;
	uint64_t hash;
	double tokens;
	double updated; /* seconds, CLOCK_MONOTONIC */
	unsigned long refused;
	char name[]; /* the client's username (its certificate's name), else its client id */
};

struct limiter {
	double rate;
	double burst;
	struct bucket **slots;
	size_t slot_count; /* a power of two; grows with count, never shrinks */
	size_t count;
	size_t sweep_at;
};

struct guard {
	mosquitto_plugin_id_t *id;
	char **members;
	int member_count;
	unsigned long refused;
	struct limiter limit;
};

static struct guard guard;

static bool is_member(const char *username)
{
	if(username == NULL) return false;
	for(int i = 0; i < guard.member_count; i++){
		if(strcmp(guard.members[i], username) == 0) return true;
	}
	return false;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_acl_check *ed = event_data;
	const char *username;

	(void)event;
	(void)userdata;
	if(ed->access != MOSQ_ACL_SUBSCRIBE || strncmp(ed->topic, "$share/", strlen("$share/")) != 0){
		return MOSQ_ERR_PLUGIN_DEFER;
	}
	username = mosquitto_client_username(ed->client);
	if(is_member(username)){
		return MOSQ_ERR_PLUGIN_DEFER; /* the ACL file has the last word, as for any subscription */
	}
	guard.refused++;
	/* A hostile client can subscribe in a loop: log the 1st, 2nd, 4th, 8th ... refusal only. */
	if((guard.refused & (guard.refused - 1)) == 0){
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				"share_guard: refused %s subscribing to %s: not a member of the shared groups (%lu so far)",
				username ? username : "(no username)", ed->topic, guard.refused);
	}
	return MOSQ_ERR_ACL_DENIED;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t hash_name(const char *name)
{
	uint64_t h = 14695981039346656037ULL; /* FNV-1a */

	for(const unsigned char *c = (const unsigned char *)name; *c; c++){
		h = (h ^ *c) * 1099511628211ULL;
	}
	return h;
}

/* Tops the bucket up for the time since it was last used. */
static void refill(struct bucket *b, double now)
{
	b->tokens = fmin(guard.limit.burst, b->tokens + (now - b->updated) * guard.limit.rate);
	b->updated = now;
}

/* Drops every bucket that is full by now: memory then follows the clients that published in the last
 * burst/rate seconds (5 s at the defaults), not every client ever seen. */
static void sweep(double now)
{
	struct limiter *l = &guard.limit;

	for(size_t i = 0; i < l->slot_count; i++){
		struct bucket **link = &l->slots[i];
		while(*link){
			struct bucket *b = *link;
			refill(b, now);
			if(b->tokens >= l->burst){
				*link = b->next;
				free(b);
				l->count--;
			}else{
				link = &b->next;
			}
		}
	}
	l->sweep_at = l->count * 2 > MIN_SWEEP ? l->count * 2 : MIN_SWEEP;
}

static void grow(void)
{
	struct limiter *l = &guard.limit;
	size_t slot_count = l->slot_count * 2;
	struct bucket **slots = calloc(slot_count, sizeof(*slots));

	if(slots == NULL) return; /* longer chains, still correct */
	for(size_t i = 0; i < l->slot_count; i++){
		while(l->slots[i]){
			struct bucket *b = l->slots[i];
			l->slots[i] = b->next;
			b->next = slots[b->hash & (slot_count - 1)];
			slots[b->hash & (slot_count - 1)] = b;
		}
	}
	free(l->slots);
	l->slots = slots;
	l->slot_count = slot_count;
}

static struct bucket *bucket_for(const char *name, double now)
{
	struct limiter *l = &guard.limit;
	uint64_t hash = hash_name(name);
	struct bucket *b;
	size_t len = strlen(name);

	for(b = l->slots[hash & (l->slot_count - 1)]; b; b = b->next){
		if(b->hash == hash && strcmp(b->name, name) == 0) return b;
	}
	if(l->count >= l->sweep_at) sweep(now);
	if(l->count >= l->slot_count) grow();
	b = malloc(sizeof(*b) + len + 1);
	if(b == NULL) return NULL;
	memcpy(b->name, name, len + 1);
	b->hash = hash;
	b->tokens = l->burst; /* a client starts with a full burst, as after a reconnect */
	b->updated = now;
	b->refused = 0;
	b->next = l->slots[hash & (l->slot_count - 1)];
	l->slots[hash & (l->slot_count - 1)] = b;
	l->count++;
	return b;
}

/* What the return value does in mosquitto 2.0.11 (src/handle_publish.c, handle__publish, after the ACL
 * check): MOSQ_ERR_SUCCESS lets the message on; MOSQ_ERR_ACL_DENIED drops it and answers a QoS 1 PUBLISH
 * with PUBACK 0x87 "not authorized" (QoS 2: PUBREC 0x87; QoS 0: nothing) and keeps the connection; any
 * other error drops it and disconnects the client. 2.0.11 neither reads the event's reason_code nor maps
 * MOSQ_ERR_QUOTA_EXCEEDED to 0x97 (2.1 does), and 2.0.0 to 2.0.10 disconnect on any error. */
static int on_message(int event, void *event_data, void *userdata)
{
	struct mosquitto_evt_message *ed = event_data;
	const char *username = mosquitto_client_username(ed->client);
	const char *name = username ? username : mosquitto_client_id(ed->client);
	double now = now_s();
	struct bucket *b;

	(void)event;
	(void)userdata;
	if(is_member(username) || name == NULL) return MOSQ_ERR_SUCCESS; /* pricing publishes every quote */
	b = bucket_for(name, now);
	if(b == NULL) return MOSQ_ERR_SUCCESS; /* out of memory: the broker has bigger problems than a limit */
	refill(b, now);
	if(b->tokens >= 1.0){
		b->tokens -= 1.0;
		return MOSQ_ERR_SUCCESS;
	}
	b->refused++;
	/* A flooding client is refused thousands of times a second: log the 1st, 2nd, 4th, 8th ... only. */
	if((b->refused & (b->refused - 1)) == 0){
		mosquitto_log_printf(MOSQ_LOG_WARNING,
				"share_guard: rate limit: refused %s publishing to %s: over %g messages/s (burst %g); "
				"%lu refused so far", name, ed->topic, guard.limit.rate, guard.limit.burst, b->refused);
	}
	return MOSQ_ERR_ACL_DENIED;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

/* A positive, finite number of messages; anything else stops the broker from starting (fail closed). */
static int parse_limit(const char *key, const char *value, double *out)
{
	char *end;
	double v = strtod(value, &end);

	if(end == value || *end != '\0' || !isfinite(v) || v < 1.0){
		mosquitto_log_printf(MOSQ_LOG_ERR,
				"share_guard: plugin_opt_%s %s: expected a number of messages, 1 or more", key, value);
		return MOSQ_ERR_INVAL;
	}
	*out = v;
	return MOSQ_ERR_SUCCESS;
}

static int parse_options(struct mosquitto_opt *options, int option_count)
{
	int rc = MOSQ_ERR_SUCCESS;

	for(int i = 0; i < option_count && rc == MOSQ_ERR_SUCCESS; i++){
		if(strcmp(options[i].key, MEMBER_KEY) == 0){
			guard.members[guard.member_count++] = options[i].value; /* the broker keeps options alive */
		}else if(strcmp(options[i].key, RATE_KEY) == 0){
			rc = parse_limit(RATE_KEY, options[i].value, &guard.limit.rate);
		}else if(strcmp(options[i].key, BURST_KEY) == 0){
			rc = parse_limit(BURST_KEY, options[i].value, &guard.limit.burst);
		}else{
			mosquitto_log_printf(MOSQ_LOG_ERR,
					"share_guard: unknown option plugin_opt_%s; the options are plugin_opt_" MEMBER_KEY
					", plugin_opt_" RATE_KEY " and plugin_opt_" BURST_KEY, options[i].key);
			rc = MOSQ_ERR_INVAL;
		}
	}
	return rc;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
		int option_count)
{
	int rc;

	(void)userdata;
	guard.id = identifier;
	guard.limit = (struct limiter){.rate = DEFAULT_RATE, .burst = DEFAULT_BURST, .slot_count = MIN_SWEEP,
		.sweep_at = MIN_SWEEP};
	guard.members = calloc((size_t)option_count + 1, sizeof(char *));
	guard.limit.slots = calloc(guard.limit.slot_count, sizeof(struct bucket *));
	if(guard.members == NULL || guard.limit.slots == NULL) return MOSQ_ERR_NOMEM;
	rc = parse_options(options, option_count);
	if(rc != MOSQ_ERR_SUCCESS) return rc;
	mosquitto_log_printf(MOSQ_LOG_NOTICE,
			"share_guard: %d identities may join shared subscriptions; every other client may publish "
			"%g messages/s (burst %g)", guard.member_count, guard.limit.rate, guard.limit.burst);
	rc = mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
	if(rc != MOSQ_ERR_SUCCESS) return rc;
	return mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, on_message, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(guard.id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	mosquitto_callback_unregister(guard.id, MOSQ_EVT_MESSAGE, on_message, NULL);
	free(guard.members);
	guard.members = NULL;
	guard.member_count = 0;
	for(size_t i = 0; i < guard.limit.slot_count && guard.limit.slots; i++){
		while(guard.limit.slots[i]){
			struct bucket *b = guard.limit.slots[i];
			guard.limit.slots[i] = b->next;
			free(b);
		}
	}
	free(guard.limit.slots);
	guard.limit = (struct limiter){0};
	return MOSQ_ERR_SUCCESS;
}
