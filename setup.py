"""Packaging for synthnb, driven by settings.ini (the nbdev 2 convention)."""
from configparser import ConfigParser
from glob import glob
import setuptools

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['Planning', 'Pre-Alpha', 'Alpha', 'Beta', 'Production/Stable', 'Mature', 'Inactive']
lic = licenses[cfg['license']]
min_python = cfg['min_python']

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    license=lic[0],
    classifiers=[
        'Development Status :: ' + str(cfg['status']) + ' - ' + statuses[int(cfg['status'])],
        'Intended Audience :: ' + cfg['audience'].title(),
        'License :: ' + lic[1],
        'Natural Language :: ' + cfg['language'].title(),
        'Programming Language :: Python :: 3',
    ],
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=['synthnb', 'synthnb.*']),
    include_package_data=True,
    package_data={'synthnb': ['cards/*.yaml']},  # the shipped datasets' cards
    # the notebooks the runner executes and the experiment templates, so that `synthnb run healthcare` works from a wheel
    data_files=[('share/synthnb/nbs', sorted(glob('nbs/*.ipynb'))), ('share/synthnb/experiments', sorted(glob('experiments/*.yaml')))],
    install_requires=cfg.get('requirements', '').split(),
    extras_require={'dev': cfg.get('dev_requirements', '').split() + cfg.get('docs_requirements', '').split(),
                    'docs': cfg.get('docs_requirements', '').split()},
    python_requires='>=' + min_python,
    description=cfg['description'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={
        'console_scripts': cfg.get('console_scripts', '').split(),
        'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"],
    },
)
