source .gpu/common.sh
T=$(( $(left) - 25 ))
common="experiment=vision_cifar10 paths.data_dir=.gpu trainer.max_epochs=180 trainer.max_time=00:00:08:35"
timeout $T python3 train.py $common task.augment.mixup_alpha=0.8 task.augment.cutmix_alpha=1.0 hydra.run.dir=$OUT/mix > $OUT/mix.log 2>&1 &
sleep 2
timeout $T python3 train.py $common hydra.run.dir=$OUT/ctl > $OUT/ctl.log 2>&1 &
wait
echo "done left $(left)" >> $OUT/times.txt
rm -rf $OUT/mix/checkpoints $OUT/ctl/checkpoints
for d in mix ctl; do tail -c 3000 $OUT/$d.log > $OUT/$d.tail; done
cd $OUT && tar czf runs.tgz mix ctl mix.log ctl.log && rm -rf mix ctl mix.log ctl.log
