/* share_guard: a mosquitto 2.0 plugin that refuses shared subscriptions ($share/GROUP/...) to every client
 * whose username (its certificate's common name) is not listed as a member.
 *
 * Why a plugin: mosquitto 2.0's ACL file does not check SUBSCRIBE at all (src/security_default.c answers
 * every subscribe "allowed"), and its read check runs only when a message is delivered. A device that
 * joins the pricing service's group $share/pricing/appliance/+/objects is therefore handed its turn of
 * every device's object messages; the read check then drops them. The senders got their PUBACK and never
 * get a quote. This plugin runs before the ACL file and answers such a SUBSCRIBE "not authorized" (SUBACK
 * 0x87), so the device never joins the group.
 *
 *   plugin /usr/local/lib/mosquitto/share_guard.so
 *   plugin_opt_member pricing-1          (one line per identity that may join shared groups)
 *
 * Everything else is deferred to the ACL file. Build: deploy/mosquitto/build-share-guard.sh. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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
#endif

#define MEMBER_KEY "member"

struct guard {
	mosquitto_plugin_id_t *id;
	char **members;
	int member_count;
	unsigned long refused;
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

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
	for(int i = 0; i < supported_version_count; i++){
		if(supported_versions[i] == 5) return 5;
	}
	return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
		int option_count)
{
	(void)userdata;
	guard.id = identifier;
	guard.members = calloc((size_t)option_count + 1, sizeof(char *));
	if(guard.members == NULL) return MOSQ_ERR_NOMEM;
	for(int i = 0; i < option_count; i++){
		if(strcmp(options[i].key, MEMBER_KEY) != 0){
			mosquitto_log_printf(MOSQ_LOG_WARNING,
					"share_guard: unknown option plugin_opt_%s; the only option is plugin_opt_" MEMBER_KEY,
					options[i].key);
			return MOSQ_ERR_INVAL;
		}
		guard.members[guard.member_count++] = options[i].value; /* the broker keeps the options alive */
	}
	mosquitto_log_printf(MOSQ_LOG_NOTICE, "share_guard: %d identities may join shared subscriptions",
			guard.member_count);
	return mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL);
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
	(void)userdata;
	(void)options;
	(void)option_count;
	mosquitto_callback_unregister(guard.id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
	free(guard.members);
	guard.members = NULL;
	guard.member_count = 0;
	return MOSQ_ERR_SUCCESS;
}
