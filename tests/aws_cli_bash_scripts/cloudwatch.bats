#!/usr/bin/env bats
# Contract tests for the CloudWatch scripts: get_metric_statistics.sh,
# put_idle_stop_alarm.sh, delete_alarms.sh and describe_alarms.sh.

load helpers/common
bats_require_minimum_version 1.5.0

ID=i-0123456789abcdef0
NAME=ec2-creator-local-idle-stop-i-0123456789abcdef0

setup() {
  fake_aws_setup
}

@test "-h and --help print usage on stdout and exit 0" {
  for script in get_metric_statistics.sh put_idle_stop_alarm.sh delete_alarms.sh describe_alarms.sh; do
    run_script "${script}" -h
    assert_help
    run_script "${script}" --help
    assert_help
  done
}

@test "get_metric_statistics: one call, the dimension as JSON, every statistic" {
  run_script get_metric_statistics.sh --instance-id "${ID}" --metric NetworkIn \
    --start 2026-11-28T07:00:00Z --end 2026-11-28T08:00:00Z --period 0300
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" cloudwatch get-metric-statistics --namespace AWS/EC2 --metric-name NetworkIn \
    --dimensions "JSON:[{\"Name\":\"InstanceId\",\"Value\":\"${ID}\"}]" \
    --start-time 2026-11-28T07:00:00Z --end-time 2026-11-28T08:00:00Z --period 300 \
    --statistics Average Minimum Maximum Sum SampleCount
}

@test "get_metric_statistics: a metric off the list, a bad time or period is a usage error" {
  local good=(--instance-id "${ID}" --start 2026-11-28T07:00:00Z --end 2026-11-28T08:00:00Z --period 300)
  run_script get_metric_statistics.sh "${good[@]}" --metric DiskReadOps
  assert_usage_error
  run_script get_metric_statistics.sh "${good[@]}" --metric CPUUtilization --start 'yesterday'
  assert_usage_error
  run_script get_metric_statistics.sh "${good[@]}" --metric CPUUtilization --end 2026-11-28T06:00:00Z
  assert_usage_error
  run_script get_metric_statistics.sh "${good[@]}" --metric CPUUtilization --period 90
  assert_usage_error
  run_script get_metric_statistics.sh "${good[@]}" --metric CPUUtilization --period 86460
  assert_usage_error
  run_script get_metric_statistics.sh "${good[@]}" --metric CPUUtilization --instance-id 'i-1;x'
  assert_usage_error
  assert_not_called
}

@test "put_idle_stop_alarm: one put-metric-alarm whose action is EC2's stop in AWS_REGION" {
  AWS_REGION=eu-west-1 run_script put_idle_stop_alarm.sh --instance-id "${ID}" --alarm-name "${NAME}" \
    --cpu-below 2.5 --minutes 30
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" --region eu-west-1 cloudwatch put-metric-alarm --alarm-name "${NAME}" \
    --alarm-description "Stops ${ID} after 30 minutes below 2.5% CPU (ec2-creator-local)" \
    --namespace AWS/EC2 --metric-name CPUUtilization \
    --dimensions "JSON:[{\"Name\":\"InstanceId\",\"Value\":\"${ID}\"}]" \
    --statistic Average --period 300 --evaluation-periods 6 --datapoints-to-alarm 6 \
    --threshold 2.5 --comparison-operator LessThanThreshold --treat-missing-data notBreaching \
    --alarm-actions arn:aws:automate:eu-west-1:ec2:stop \
    --tags 'JSON:[{"Key":"ManagedBy","Value":"ec2-creator-local"}]'
}

@test "put_idle_stop_alarm: bad thresholds, durations, names or no region are usage errors" {
  export AWS_REGION=us-east-1
  local base=(--instance-id "${ID}" --alarm-name "${NAME}")
  for percent in 0 0.0 100.5 101 -1 1e3 '5%' 1.23456; do
    run_script put_idle_stop_alarm.sh "${base[@]}" --cpu-below "${percent}" --minutes 30
    assert_usage_error
  done
  for minutes in 0 4 7 1445 abc; do
    run_script put_idle_stop_alarm.sh "${base[@]}" --cpu-below 5 --minutes "${minutes}"
    assert_usage_error
  done
  run_script put_idle_stop_alarm.sh --instance-id "${ID}" --alarm-name 'a b' --cpu-below 5 --minutes 30
  assert_usage_error
  run_script put_idle_stop_alarm.sh --instance-id "${ID}" --alarm-name '-x' --cpu-below 5 --minutes 30
  assert_usage_error
  AWS_REGION='' run_script put_idle_stop_alarm.sh "${base[@]}" --cpu-below 5 --minutes 30
  assert_usage_error
  assert_not_called
}

@test "delete_alarms and describe_alarms: one call each" {
  run_script delete_alarms.sh --alarm-name "${NAME}" --alarm-name other
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" cloudwatch delete-alarms --alarm-names "${NAME}" other
  run_script describe_alarms.sh --prefix ec2-creator-local-idle-stop-
  assert_ok_output
  assert_argv "${GLOBAL_ARGS[@]}" cloudwatch describe-alarms --alarm-name-prefix ec2-creator-local-idle-stop- \
    --alarm-types MetricAlarm
}

@test "delete_alarms and describe_alarms: bad arguments spawn nothing" {
  run_script delete_alarms.sh
  assert_usage_error
  run_script delete_alarms.sh --alarm-name 'file://x'
  assert_usage_error
  run_script describe_alarms.sh
  assert_usage_error
  run_script describe_alarms.sh --prefix 'a*'
  assert_usage_error
  assert_not_called
}

@test "the CLI exit code and stderr are passed through" {
  FAKE_AWS_EXIT=254 FAKE_AWS_STDERR="An error occurred (ResourceNotFound)" \
    run_script delete_alarms.sh --alarm-name "${NAME}"
  [ "${status}" -eq 254 ]
  [ "${stderr}" = "An error occurred (ResourceNotFound)" ]
}
